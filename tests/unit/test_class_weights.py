from __future__ import annotations

import pytest

from mura.data.class_weights import compute_class_weights
from mura.errors import DataError

CASES = [
    ([0, 0, 0, 1], {"0": 0.25, "1": 0.75}),
    ([0, 1], {"0": 0.5, "1": 0.5}),
    ([1, 1, 1, 0, 0], {"0": 0.6, "1": 0.4}),
    # The seed's MURA training counts: 21,935 normal, 14,873 abnormal.
    ([0] * 21935 + [1] * 14873, {"0": 14873 / 36808, "1": 21935 / 36808}),
]


@pytest.mark.parametrize("labels,expected", CASES)
def test_class_weights(labels: list[int], expected: dict[str, float]) -> None:
    weights = compute_class_weights(labels)
    assert weights == pytest.approx(expected)
    assert sum(weights.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("labels,message", [([], "empty"), ([0, 0], "only one class"), ([0, 2], "0 or 1")])
def test_class_weights_errors(labels: list[int], message: str) -> None:
    with pytest.raises(DataError, match=message):
        compute_class_weights(labels)

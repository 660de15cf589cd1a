"""The reduced-precision guard: pure comparison and decision (the export itself runs in tests/e2e/test_runtime.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura.serving.export import choose_precision, compare_runtimes

ROWS = pd.DataFrame({"study_id": ["a", "a", "b", "c"], "label": [1, 1, 0, 0]})
REFERENCE = np.array([[0.9, 0.7], [0.6, 0.5], [0.2, 0.4], [0.49, 0.52]])


def test_identical_runtimes_agree_fully() -> None:
    result = compare_runtimes(REFERENCE, REFERENCE.copy(), ROWS, [1.0, 1.0], {"default": 0.5, "high_sensitivity": 0.3})
    assert result == {"max_abs_dp": 0.0, "studies": 3, "images": 4, "agreement": {"default": 1.0, "high_sensitivity": 1.0}}


def test_a_small_shift_that_flips_one_study() -> None:
    # Study c: mean .505 -> .495 with a shift of -.01 on both variants: its label flips at 0.5.
    candidate = REFERENCE.copy()
    candidate[3] -= 0.01
    result = compare_runtimes(REFERENCE, candidate, ROWS, [1.0, 1.0], {"default": 0.5})
    assert result["max_abs_dp"] == pytest.approx(0.01)
    assert result["agreement"]["default"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "bf16,expected",
    [
        ({"max_abs_dp": 0.003, "agreement": {"default": 1.0, "high_sensitivity": 0.996}}, "bf16"),
        ({"max_abs_dp": 0.02, "agreement": {"default": 1.0}}, "f32"),  # |dp| too large
        ({"max_abs_dp": 0.003, "agreement": {"default": 1.0, "high_sensitivity": 0.99}}, "f32"),  # a label flipped too often
        (None, "f32"),  # no native bf16
    ],
)
def test_choose_precision(bf16: dict | None, expected: str) -> None:
    precision, reason = choose_precision(bf16, 0.01, 0.995)
    assert precision == expected and reason
    if bf16 is not None and expected == "f32":
        assert reason.startswith("bf16 rejected")

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mura.data.split import assign_test_patients, count_split, make_split
from mura.errors import DataError

PARTS = ["XR_WRIST", "XR_HAND", "XR_ELBOW"]


def _images(spec: list[tuple[int, int, int, int]]) -> pd.DataFrame:
    """spec: (patient, part index, label, n_images) for MURA train."""
    rows = []
    for patient, part, label, n in spec:
        for k in range(n):
            rows.append(
                {
                    "image_id": f"mura:{patient}/{part}/{label}/{k}",
                    "dataset": "mura",
                    "source_split": "train",
                    "patient_id": f"patient{patient:05d}",
                    "body_part": PARTS[part],
                    "label": label,
                }
            )
    return pd.DataFrame(rows)


patients_strategy = st.lists(
    st.tuples(st.integers(0, 400), st.integers(0, 2), st.integers(0, 1), st.integers(1, 4)), min_size=30, max_size=200
)


@settings(max_examples=40, deadline=None)
@given(spec=patients_strategy, seed=st.integers(0, 2**31 - 1), fraction=st.sampled_from([0.1, 0.2, 0.3]))
def test_split_properties(spec: list[tuple[int, int, int, int]], seed: int, fraction: float) -> None:
    images = _images(spec)
    split = make_split(images, fraction, seed)
    merged = images.merge(split, on="image_id")
    # No patient in two splits.
    assert merged.groupby("patient_id")["split"].nunique().max() == 1
    # Deterministic for a seed.
    assert split.equals(make_split(images, fraction, seed))
    # The held-out share is close to the target (one patient holds at most 3 strata x 4 x ... images).
    share = (merged["split"] == "test").mean()
    max_patient = merged.groupby("patient_id").size().max()
    assert abs(share - fraction) <= 6 * max_patient / len(merged) + 0.02


def test_split_stratifies_by_body_part_and_label() -> None:
    spec = [(p, p % 3, (p // 3) % 2, 2) for p in range(600)]  # 100 patients per stratum, 2 images each
    images = _images(spec)
    merged = images.merge(make_split(images, 0.1, seed=1), on="image_id")
    per_stratum = merged.groupby(["body_part", "label"])["split"].apply(lambda s: (s == "test").mean())
    assert per_stratum.between(0.09, 0.11).all(), per_stratum


def test_valid_and_fracture_splits_are_kept() -> None:
    images = pd.DataFrame(
        [
            {
                "image_id": "m1",
                "dataset": "mura",
                "source_split": "valid",
                "patient_id": "p1",
                "body_part": "XR_HAND",
                "label": 1,
            },
            {
                "image_id": "f1",
                "dataset": "fracture",
                "source_split": "val",
                "patient_id": "f1",
                "body_part": "MULTI_REGION",
                "label": 0,
            },
            {
                "image_id": "f2",
                "dataset": "fracture",
                "source_split": "test",
                "patient_id": "f2",
                "body_part": "MULTI_REGION",
                "label": 1,
            },
            {
                "image_id": "f3",
                "dataset": "fracture",
                "source_split": "train",
                "patient_id": "f3",
                "body_part": "MULTI_REGION",
                "label": 1,
            },
        ]
    )
    split = make_split(images, 0.1, 0)
    assert split["split"].tolist() == ["valid", "valid", "test", "train"]
    counts = count_split(images, split)
    assert counts["totals"] == {"train": 1, "valid": 2, "test": 1}
    assert counts["valid"]["fracture"]["MULTI_REGION"] == {"normal": 1}


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        assign_test_patients(_images([(1, 0, 0, 1)]), 1.5, 0)
    bad = pd.DataFrame(
        [{"image_id": "x", "dataset": "knees", "source_split": "train", "patient_id": "p", "body_part": "b", "label": 0}]
    )
    with pytest.raises(DataError, match="unknown dataset"):
        make_split(bad, 0.1, 0)
    assert assign_test_patients(_images([(1, 0, 0, 1)]), 0.0, 0) == set()

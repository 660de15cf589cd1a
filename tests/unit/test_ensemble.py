from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura.evaluation.calibrate import threshold_for_recall
from mura.evaluation.predict import study_subset
from mura.modeling.averaging import aggregate_studies, average_probabilities, ensemble_weights


def test_average_equal_and_weighted() -> None:
    probs = np.array([[0.2, 0.4, 0.6, 0.8], [1.0, 0.0, 1.0, 0.0]])
    assert average_probabilities(probs).tolist() == pytest.approx([0.5, 0.5])
    assert average_probabilities(probs, [1, 0, 0, 1]).tolist() == pytest.approx([0.5, 0.5])
    assert average_probabilities(probs, [3, 1, 0, 0]).tolist() == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="weights"):
        average_probabilities(probs, [1, 1])
    with pytest.raises(ValueError, match="shape"):
        average_probabilities(np.zeros(3))


def test_ensemble_weights_from_params() -> None:
    assert ensemble_weights(["a", "b"], {}) == [1.0, 1.0]
    assert ensemble_weights(["a", "b"], {"b": 2}) == [1.0, 2.0]
    with pytest.raises(ValueError, match="unknown"):
        ensemble_weights(["a"], {"z": 1})


def test_study_aggregation_is_the_mean_of_views() -> None:
    images = pd.DataFrame(
        {
            "study_id": ["s2", "s1", "s1", "s2", "s2"],
            "patient_id": ["p2", "p1", "p1", "p2", "p2"],
            "label": [0, 1, 1, 0, 0],
            "p": [0.1, 0.9, 0.5, 0.2, 0.3],
        }
    )
    studies = aggregate_studies(images, ["p"])
    assert studies["study_id"].tolist() == ["s1", "s2"]
    assert studies["p"].tolist() == pytest.approx([0.7, 0.2])
    assert studies["n_views"].tolist() == [2, 3] and studies["patient_id"].tolist() == ["p1", "p2"]
    with pytest.raises(ValueError, match="different labels"):
        aggregate_studies(images.assign(label=[0, 1, 0, 0, 0]), ["p"])


@pytest.mark.parametrize(
    "target,expected",
    [(0.5, 0.8), (0.75, 0.6), (0.9, 0.3), (1.0, 0.3)],  # positives scored .9 .8 .6 .3
)
def test_threshold_for_recall(target: float, expected: float) -> None:
    y = np.array([1, 1, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.1])
    t = threshold_for_recall(y, p, target)
    assert t == pytest.approx(expected)
    assert ((p >= t) & (y == 1)).sum() / 4 >= target


def test_study_subset_keeps_whole_studies() -> None:
    frame = pd.DataFrame({"study_id": [f"s{k // 3}" for k in range(30)]})  # ten studies of three views
    kept = study_subset(frame, 4, seed=1)
    studies = frame.iloc[kept]["study_id"]
    assert studies.nunique() == 4 and len(kept) == 12 and list(kept) == sorted(kept)
    assert list(study_subset(frame, 4, seed=1)) == list(kept)  # seeded
    assert list(study_subset(frame, 0, seed=1)) == list(range(30)) == list(study_subset(frame, 10, seed=1))

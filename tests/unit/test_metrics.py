from __future__ import annotations

import numpy as np
import pytest

from mura.evaluation.metrics import METRICS, binary_metrics, bootstrap_ci, fast_metrics

# Hand-computed: labels 1,1,1,0,0,0,0,0 ; probs .9,.8,.3,.6,.2,.1,.1,.05 ; threshold .5
# -> tp=2 fn=1 fp=1 tn=4 ; accuracy 6/8 ; precision 2/3 ; recall 2/3 ; f1 2/3
# kappa: po=.75, pe=(3*3+5*5)/64=34/64 -> (0.75-0.53125)/(0.46875)=0.4666...
# AUC: positive-negative pairs 15; .9 beats 5, .8 beats 5, .3 beats 4 (.2,.1,.1,.05) -> 14/15
Y = np.array([1, 1, 1, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.05])
EXPECTED = {
    "accuracy": 0.75,
    "precision": 2 / 3,
    "recall": 2 / 3,
    "specificity": 4 / 5,
    "f1": 2 / 3,
    "kappa": 0.21875 / 0.46875,
    "roc_auc": 14 / 15,
    "tp": 2,
    "fn": 1,
    "fp": 1,
    "tn": 4,
    "n": 8,
}


def test_binary_metrics_hand_computed() -> None:
    assert binary_metrics(Y, P, 0.5) == pytest.approx(EXPECTED)


def test_threshold_moves_the_operating_point() -> None:
    m = binary_metrics(Y, P, 0.25)
    assert (m["tp"], m["fn"], m["fp"]) == (3, 0, 1) and m["recall"] == 1.0


def test_single_class_edge_cases() -> None:
    m = binary_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(m["roc_auc"]) and m["precision"] == 0.0 and m["accuracy"] == 1.0
    with pytest.raises(ValueError):
        binary_metrics(np.zeros(3), np.zeros(2))


def _sklearn_metrics(y: np.ndarray, p: np.ndarray, t: float) -> dict[str, float]:
    """The reference: scikit-learn's functions (zero_division=0; kappa 1.0 when labels and predictions are one equal constant)."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score, precision_score, recall_score, roc_auc_score

    pred = (p >= t).astype(int)
    kappa = cohen_kappa_score(y, pred) if len(np.unique(np.concatenate([y, pred]))) > 1 else 1.0
    return {
        "accuracy": accuracy_score(y, pred),
        "precision": precision_score(y, pred, zero_division=0),
        "recall": recall_score(y, pred, zero_division=0),
        "specificity": recall_score(y, pred, pos_label=0, zero_division=0),
        "f1": f1_score(y, pred, zero_division=0),
        "roc_auc": roc_auc_score(y, p) if len(np.unique(y)) == 2 else float("nan"),
        "kappa": 0.0 if np.isnan(kappa) else kappa,
    }


CASES = [
    (np.random.default_rng(seed).integers(0, 2, 40), np.round(np.random.default_rng(seed + 100).random(40), 1))  # many ties
    for seed in range(8)
] + [
    (np.zeros(5, int), np.array([0.1, 0.2, 0.3, 0.4, 0.9])),  # one class
    (np.ones(4, int), np.full(4, 0.9)),  # one class, predicted constant and equal
    (np.ones(4, int), np.full(4, 0.1)),  # one class, predicted constant and wrong
    (np.array([0, 1, 0, 1]), np.full(4, 0.2)),  # predictions constant
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("t", [0.3, 0.5, 0.7])
def test_fast_and_binary_metrics_agree_with_sklearn(case: int, t: float) -> None:
    y, p = CASES[case]
    reference, fast, full = _sklearn_metrics(y, p, t), fast_metrics(y, p, t), binary_metrics(y, p, t)
    for name in METRICS:
        assert fast[name] == pytest.approx(reference[name], abs=1e-12, nan_ok=True), name
        assert full[name] == pytest.approx(reference[name], abs=1e-12, nan_ok=True), name


def test_bootstrap_covers_the_truth_on_a_toy_case() -> None:
    """For a known AUC, ~95 % of patient-bootstrap intervals should contain it."""
    rng = np.random.default_rng(0)
    hits, trials = 0, 60
    for k in range(trials):
        n = 120
        y = rng.integers(0, 2, n)
        score = y + rng.normal(0, 1.0, n)  # true AUC = Phi(1/sqrt(2)) = 0.7602
        ci = bootstrap_ci(
            np.arange(n),
            lambda rows, y=y, score=score: fast_metrics(y[rows], score[rows], 0.5),  # type: ignore[misc]
            ("roc_auc",),
            n_resamples=200,
            seed=k,
        )["roc_auc"]
        hits += ci[0] <= 0.7602 <= ci[1]
    assert 0.85 <= hits / trials <= 1.0


def test_bootstrap_resamples_whole_patients() -> None:
    patients = np.array(["b", "a", "c", "a", "b", "b"])  # unsorted, unequal group sizes
    label, prob = np.array([1, 1, 0, 1, 1, 1]), np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.5])
    draws: list[np.ndarray] = []

    def metric(rows: np.ndarray) -> dict[str, float]:
        draws.append(rows)
        return fast_metrics(label[rows], prob[rows], 0.5)

    bootstrap_ci(patients, metric, n_resamples=40, seed=1)
    assert len(draws) == 40
    for rows in draws:  # whole patients: every row of a patient appears as often as the patient was drawn
        counts = np.bincount(rows, minlength=len(patients))
        multiplicity = {p: set(counts[patients == p].tolist()) for p in set(patients.tolist())}
        assert all(len(m) == 1 for m in multiplicity.values())
        assert sum(m.pop() for m in multiplicity.values()) == 3  # three patients drawn, with replacement
    assert np.isnan(bootstrap_ci(patients, lambda rows: {}, ("kappa",), n_resamples=0)["kappa"][0])  # disabled

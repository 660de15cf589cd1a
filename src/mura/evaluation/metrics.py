"""Classification and calibration metrics, and patient-level bootstrap CIs (pure functions)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.calibration import calibration_curve

METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "kappa")
# Calibration of the probability itself (no threshold): expected calibration error over 15 equal-width
# bins and over 15 equal-mass bins, maximum calibration error, Brier score and log loss.
CALIBRATION_METRICS = ("ece", "ece_adaptive", "mce", "brier", "log_loss")
CALIBRATION_BINS = 15


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC AUC, Cohen's kappa and the confusion counts.

    The :data:`METRICS` are :func:`fast_metrics`' (scikit-learn's definitions, checked against
    scikit-learn in ``tests/unit/test_metrics.py``): the evaluation table computes ~660 of these
    per `make demo`, and scikit-learn's six calls with their argument validation cost ~10 ms each.

    Args:
        y_true: 0/1 labels.
        y_prob: P(abnormal).
        threshold: predict abnormal when ``prob >= threshold``.

    Returns:
        Dict of metrics; ``roc_auc`` is NaN when only one class is present, and
        precision/kappa are 0 where undefined (scikit-learn ``zero_division=0``).

    Raises:
        ValueError: shapes differ or are empty.
    """
    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.asarray(y_prob, dtype=np.float64).ravel()
    if y_true.shape != y_prob.shape or y_true.size == 0:
        raise ValueError(f"y_true {y_true.shape} and y_prob {y_prob.shape} must be equal, non-empty shapes")
    y = y_true.astype(bool)
    tn, fp, fn, tp = confusion = _confusion(y, y_prob >= threshold)
    values = {name: float(value) for name, value in _from_counts(y, y_prob, confusion).items()}
    return values | {"tn": tn, "fp": fp, "fn": fn, "tp": tp, "n": int(y_true.size)}


def _confusion(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    """``(tn, fp, fn, tp)`` of boolean labels and predictions."""
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    return len(y) - tp - fp - fn, fp, fn, tp


def fast_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict[str, float]:
    """The :data:`METRICS` from confusion counts and ranks, for bootstrap loops.

    Same definitions as scikit-learn (``zero_division=0``, kappa 1.0 when both
    label and prediction are constant and equal, AUC by the Mann-Whitney rank
    statistic with ties averaged); ``tests/unit/test_metrics.py`` checks they
    agree with scikit-learn's functions to 1e-12. About 50x faster than calling
    scikit-learn six times per replicate.
    """
    y = y_true.astype(bool)
    return _from_counts(y, y_prob, _confusion(y, y_prob >= threshold))


def _from_counts(y: np.ndarray, y_prob: np.ndarray, confusion: tuple[int, int, int, int]) -> dict[str, float]:
    """:func:`fast_metrics` given the boolean labels and their confusion counts ``(tn, fp, fn, tp)``."""
    tn, fp, fn, tp = (float(count) for count in confusion)
    n = tp + fp + fn + tn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    observed = (tp + tn) / n
    expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
    kappa = (observed - expected) / (1 - expected) if expected < 1 else 1.0
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos and n_neg:
        order = np.argsort(y_prob, kind="mergesort")
        ranks = np.empty(len(y_prob))
        sorted_prob = y_prob[order]
        # Average ranks of ties.
        _, first, counts = np.unique(sorted_prob, return_index=True, return_counts=True)
        avg = first + (counts + 1) / 2.0
        ranks[order] = np.repeat(avg, counts)
        auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    else:
        auc = float("nan")
    specificity = tn / (tn + fp) if tn + fp else 0.0
    return {
        "accuracy": observed,
        "precision": precision,
        "recall": recall,
        "specificity": specificity,
        "f1": f1,
        "roc_auc": float(auc),
        "kappa": kappa,
    }


def calibration_metrics(y_true: np.ndarray, y_prob: np.ndarray, bins: int = CALIBRATION_BINS) -> dict[str, float]:
    """How far the probabilities are from observed frequencies (the :data:`CALIBRATION_METRICS`).

    ``ece``: the mean over ``bins`` equal-width bins of |fraction abnormal − mean probability|,
    weighted by the bin's share of rows; ``ece_adaptive``: the same over equal-mass bins (each
    holding ~n/bins rows, sorted by probability); ``mce``: the largest gap of an equal-width bin;
    ``brier``: mean squared error of the probability; ``log_loss``: mean negative log-likelihood
    (probabilities clipped to [1e-7, 1 − 1e-7]). Brier and log loss equal scikit-learn's
    ``brier_score_loss`` and ``log_loss`` (tests check it); this numpy form runs in bootstrap loops.

    Args:
        y_true: 0/1 labels.
        y_prob: probabilities.
        bins: number of bins of both ECE variants.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_prob, dtype=np.float64).ravel()
    if y.size == 0:
        return {name: float("nan") for name in CALIBRATION_METRICS}
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    gaps = np.abs(np.bincount(index, weights=y, minlength=bins) - np.bincount(index, weights=p, minlength=bins))
    filled = counts > 0
    order = np.argsort(p, kind="stable")
    adaptive = sum(abs(float(y[c].sum() - p[c].sum())) for c in np.array_split(order, min(bins, y.size)))
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return {
        "ece": float(gaps.sum() / y.size),
        "ece_adaptive": float(adaptive / y.size),
        "mce": float((gaps[filled] / counts[filled]).max()),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))),
    }


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, bins: int = CALIBRATION_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability and fraction abnormal per non-empty equal-width bin (scikit-learn's ``calibration_curve``)."""

    fraction, mean_prob = calibration_curve(np.asarray(y_true).astype(int), np.asarray(y_prob, dtype=np.float64), n_bins=bins)
    return mean_prob, fraction


def bootstrap_ci(
    groups: np.ndarray,
    metric: Callable[[np.ndarray], dict[str, float]],
    names: tuple[str, ...] = METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs, resampling whole groups (patients) with replacement.

    Args:
        groups: the resampling unit of each row (e.g. the ``patient_id`` column).
        metric: function of the resampled row positions (int array, repeats allowed)
            returning a dict of metrics; index your own arrays with it (no DataFrame
            copies in the loop: this runs hundreds of times per table row).
        names: metrics to report.
        n_resamples: bootstrap replicates (0 disables: NaN intervals).
        seed: RNG seed.
        level: confidence level.

    Returns:
        ``{name: (low, high)}``; NaN where a metric is undefined in too many replicates.
    """
    groups = np.asarray(groups)
    if n_resamples <= 0 or len(groups) == 0:
        return {name: (float("nan"), float("nan")) for name in names}
    rng = np.random.default_rng(seed)
    unique, codes = np.unique(groups, return_inverse=True)
    by_group = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(codes, minlength=len(unique)))])
    members = [by_group[starts[k] : starts[k + 1]] for k in range(len(unique))]
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(n_resamples):
        picked = rng.integers(0, len(unique), len(unique))
        values = metric(np.concatenate([members[k] for k in picked]))
        for name in names:
            samples[name].append(values[name])
    alpha = (1.0 - level) / 2.0
    out = {}
    for name, drawn in samples.items():
        arr = np.asarray(drawn, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[name] = (
            (float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha)))
            if len(arr) >= 0.5 * n_resamples
            else (float("nan"), float("nan"))
        )
    return out

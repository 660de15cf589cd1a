"""The ``calibrate`` stage: fit the study-probability calibrator on valid, then choose the operating points.

Runs after ``ensemble`` on its validation predictions only (patient-level split: the
calibrator never sees test). The operating points are chosen on the *calibrated* study
probability, so ``default`` (0.5) means 50 %:

- ``default``: 0.5;
- ``high_sensitivity``: the highest threshold whose recall on valid studies reaches
  ``ensemble.target_recall``;
- ``high_specificity``: the lowest threshold whose specificity on valid studies reaches
  ``ensemble.target_specificity`` ("certain" vs "possible" findings, as commercial tools show).

Before it is kept, the calibrator must earn its place out of fold: the valid studies are split
in ``calibrate.folds`` stratified folds, the method is fitted on the others and applied to each
fold, and the map is kept only if that neither raises the ECE nor the Brier score of the raw
probability. Otherwise the raw probability is served (``method: none``) and ``thresholds.json``
says which method was tried and why it was not kept: on a small validation split (the demo's has
46 studies) a fitted map can make things worse, and serving it would be a claim it cannot back.

Writes ``reports/thresholds.json``: the thresholds, the targets, the variant weights and the
calibrator with its out-of-fold check (``register`` puts the calibrator in the served model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from mura.config import CalibrateParams, CalibrationMethod, EnsembleParams
from mura.errors import DataError
from mura.evaluation.metrics import calibration_metrics
from mura.modeling.averaging import ENSEMBLE, aggregate_studies, ensemble_weights, prob_column
from mura.modeling.calibration import Calibrator, fit_calibrator
from mura.modeling.operating_points import OperatingPoints
from mura.stage import Layout

logger = logging.getLogger(__name__)

__all__ = ["out_of_fold_check", "operating_points", "run_calibrate", "threshold_for_recall", "threshold_for_specificity"]


def out_of_fold_check(
    y_true: np.ndarray, p_raw: np.ndarray, method: CalibrationMethod, folds: int, bins: int = 15, seed: int = 0
) -> dict[str, Any]:
    """ECE and Brier of the raw probability and of the method fitted out of fold (scikit-learn's StratifiedKFold).

    Returns:
        ``{"folds", "ece": {"raw", "calibrated"}, "brier": {...}, "keep": bool}``; with fewer studies of
        a class than folds, the check cannot run and ``keep`` is False.
    """

    y = np.asarray(y_true).astype(int)
    p = np.asarray(p_raw, dtype=np.float64)
    if method == "none":
        return {"folds": folds, "keep": False, "reason": "calibrate.method is none"}
    if min(np.bincount(y, minlength=2)) < folds:
        return {"folds": folds, "keep": False, "reason": "fewer studies of a class than folds: the check cannot run"}
    out = np.empty_like(p)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p.reshape(-1, 1), y):
        out[test] = fit_calibrator(y[train], p[train], method).apply(p[test])
    raw, calibrated = calibration_metrics(y, p, bins), calibration_metrics(y, out, bins)
    keep = calibrated["ece"] <= raw["ece"] and calibrated["brier"] <= raw["brier"]
    return {
        "folds": folds,
        "ece": {"raw": raw["ece"], "calibrated": calibrated["ece"]},
        "brier": {"raw": raw["brier"], "calibrated": calibrated["brier"]},
        "keep": bool(keep),
    }


def threshold_for_recall(y_true: np.ndarray, y_prob: np.ndarray, target_recall: float) -> float:
    """The highest threshold whose recall (``prob >= t``) reaches ``target_recall``.

    Args:
        y_true: 0/1 labels.
        y_prob: probabilities.
        target_recall: e.g. 0.90.

    Returns:
        The threshold (a probability from ``y_prob``); 0.0 when there is no positive.

    Raises:
        ValueError: target outside (0, 1].
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    y_true = np.asarray(y_true).astype(bool)
    positives = np.sort(np.asarray(y_prob, dtype=np.float64)[y_true])[::-1]
    if len(positives) == 0:
        return 0.0
    needed = int(np.ceil(target_recall * len(positives) - 1e-9))
    return float(positives[max(needed, 1) - 1])


def threshold_for_specificity(y_true: np.ndarray, y_prob: np.ndarray, target_specificity: float) -> float:
    """The lowest threshold whose specificity (``prob < t`` for negatives) reaches the target.

    Args:
        y_true: 0/1 labels.
        y_prob: probabilities.
        target_specificity: e.g. 0.90.

    Returns:
        A threshold just above the k-th lowest negative probability (k = ceil(target × negatives));
        1.0 when there is no negative.

    Raises:
        ValueError: target outside (0, 1].
    """
    if not 0.0 < target_specificity <= 1.0:
        raise ValueError(f"target_specificity must be in (0, 1], got {target_specificity}")
    negatives = np.sort(np.asarray(y_prob, dtype=np.float64)[~np.asarray(y_true).astype(bool)])
    if len(negatives) == 0:
        return 1.0
    needed = max(int(np.ceil(target_specificity * len(negatives) - 1e-9)), 1)
    return float(min(np.nextafter(negatives[needed - 1], np.inf), 1.0))


def operating_points(y_true: np.ndarray, y_prob: np.ndarray, target_recall: float, target_specificity: float) -> dict[str, float]:
    """The three operating points on (calibrated) study probabilities (pure)."""
    return {
        "default": 0.5,
        "high_sensitivity": threshold_for_recall(y_true, y_prob, target_recall),
        "high_specificity": threshold_for_specificity(y_true, y_prob, target_specificity),
    }


@dataclass(frozen=True)
class CalibratePaths:
    """What the ``calibrate`` stage reads and writes (defaults: the standard layout).

    Attributes:
        predictions: ``valid.csv`` of the ``ensemble`` stage.
        thresholds: where the operating points and the calibrator are written.
    """

    predictions: Path = Layout.PREDICTIONS
    thresholds: Path = Layout.THRESHOLDS


def run_calibrate(
    variants: Sequence[str], ensemble: EnsembleParams, params: CalibrateParams, paths: CalibratePaths
) -> dict[str, Any]:
    """The ``calibrate`` stage (see the module docstring).

    Args:
        variants: the variant names (keys of ``models:``), in ensemble order.
        ensemble: the ``ensemble`` section (weights and operating-point targets).
        params: the ``calibrate`` section.
        paths: what it reads and writes.

    Returns:
        What ``thresholds.json`` holds.

    Raises:
        DataError: the valid predictions are missing or empty.
    """
    valid_csv = paths.predictions / "valid.csv"
    if not valid_csv.exists():
        raise DataError(f"{valid_csv} is missing: run the ensemble stage first")
    valid = pd.read_csv(valid_csv)
    if valid.empty:
        raise DataError("the valid split is empty: cannot calibrate or choose operating points")
    column = prob_column(ENSEMBLE)
    studies = aggregate_studies(valid, [column])
    y, raw = studies["label"].to_numpy(), studies[column].to_numpy(dtype=np.float64)
    check = out_of_fold_check(y, raw, params.method, params.folds, params.bins)
    calibrator: Calibrator = fit_calibrator(y, raw, params.method) if check["keep"] else Calibrator()
    if params.method != "none" and not check["keep"]:
        logger.warning(
            "calibration %s not kept: it does not improve ECE and Brier out of fold on valid (%s)", params.method, check
        )
    points = OperatingPoints(
        thresholds=operating_points(y, calibrator.apply(raw), ensemble.target_recall, ensemble.target_specificity),
        variant_weights=dict(zip(variants, ensemble_weights(list(variants), ensemble.variant_weights), strict=True)),
        calibration={
            **calibrator.to_dict(),
            "requested": params.method,
            "fitted_on": "valid studies",
            "n_studies": int(len(studies)),
            "out_of_fold_check": check,
        },
        target_recall=ensemble.target_recall,
        target_specificity=ensemble.target_specificity,
    )
    points.save(paths.thresholds)
    return points.to_dict()

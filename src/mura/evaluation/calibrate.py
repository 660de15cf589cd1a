"""The ``calibrate`` stage: fit the study-probability calibrator on valid, then choose the operating points.

Runs after ``ensemble`` on its validation predictions only (patient-level split: the
calibrator never sees test). The operating points are chosen on the *calibrated* study
probability, so ``default`` (0.5) means 50 %:

- ``default``: 0.5;
- ``high_sensitivity``: the highest threshold whose recall on valid studies reaches
  ``ensemble.target_recall``;
- ``high_specificity``: the lowest threshold whose specificity on valid studies reaches
  ``ensemble.target_specificity`` ("certain" vs "possible" findings, as commercial tools show).

Writes ``reports/thresholds.json``: the thresholds, the targets, the variant weights and the
calibrator (``register`` puts it in the served model).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.config import CalibrateParams, EnsembleParams
from mura.errors import DataError
from mura.evaluation.ensemble import ENSEMBLE, aggregate_studies, ensemble_weights, prob_column, threshold_for_recall
from mura.modeling.calibration import Calibrator, fit_calibrator
from mura.stage import write_json

__all__ = ["operating_points", "run_calibrate", "threshold_for_specificity"]


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


def run_calibrate(
    variants: Sequence[str],
    ensemble: EnsembleParams,
    params: CalibrateParams,
    predictions_dir: Path,
    thresholds_json: Path,
) -> dict[str, Any]:
    """The ``calibrate`` stage (see the module docstring).

    Args:
        variants: the variant names (keys of ``models:``), in ensemble order.
        ensemble: the ``ensemble`` section (weights and operating-point targets).
        params: the ``calibrate`` section.
        predictions_dir: ``valid.csv`` of the ``ensemble`` stage.
        thresholds_json: where the operating points and the calibrator are written.

    Returns:
        What ``thresholds.json`` holds.

    Raises:
        DataError: the valid predictions are missing or empty.
    """
    valid_csv = predictions_dir / "valid.csv"
    if not valid_csv.exists():
        raise DataError(f"{valid_csv} is missing: run the ensemble stage first")
    valid = pd.read_csv(valid_csv)
    if valid.empty:
        raise DataError("the valid split is empty: cannot calibrate or choose operating points")
    column = prob_column(ENSEMBLE)
    studies = aggregate_studies(valid, [column])
    y, raw = studies["label"].to_numpy(), studies[column].to_numpy(dtype=np.float64)
    calibrator: Calibrator = fit_calibrator(y, raw, params.method)
    result = {
        "thresholds": operating_points(y, calibrator.apply(raw), ensemble.target_recall, ensemble.target_specificity),
        "chosen_on": "valid",
        "level": "study",
        "probability": "calibrated",
        "target_recall": ensemble.target_recall,
        "target_specificity": ensemble.target_specificity,
        "variant_weights": dict(zip(variants, ensemble_weights(list(variants), ensemble.variant_weights), strict=True)),
        "calibration": {**calibrator.to_dict(), "fitted_on": "valid studies", "n_studies": int(len(studies))},
    }
    write_json(thresholds_json, result)
    return result

"""Ensembling, study-level aggregation and the recall target (pure functions), and the ``ensemble`` stage.

The seed averages the four models' probabilities; a study's probability is
the mean of its views' probabilities (the MURA protocol). Operating points
are chosen on ``valid`` by the ``calibrate`` stage and applied unchanged to ``test``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura.config import EnsembleParams

__all__ = [
    "ENSEMBLE",
    "aggregate_studies",
    "average_probabilities",
    "ensemble_weights",
    "prob_column",
    "run_ensemble",
    "threshold_for_recall",
]

ENSEMBLE = "ensemble"  # the model name of the average, next to the variants' names


def prob_column(model: str) -> str:
    """Name of a model's probability column (``p_<variant>``, ``p_ensemble``) in predictions and served rows."""
    return f"p_{model}"


def average_probabilities(probabilities: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of per-model probabilities.

    Args:
        probabilities: array (n_images, n_models) of P(abnormal).
        weights: one non-negative weight per model (normalised here); equal when None.

    Returns:
        Array (n_images,) of ensemble probabilities.

    Raises:
        ValueError: bad shapes or weights.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0:
        raise ValueError(f"probabilities must be (n_images, n_models), got shape {probs.shape}")
    w = np.ones(probs.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (probs.shape[1],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {probs.shape[1]} non-negative numbers with a positive sum, got {list(w)}")
    average: np.ndarray = probs @ (w / w.sum())
    return average


def ensemble_weights(variants: Sequence[str], configured: Mapping[str, float] | None) -> list[float]:
    """Weights in ``variants`` order from the ``ensemble.variant_weights`` param (missing → 1, empty → equal)."""
    configured = configured or {}
    unknown = set(configured) - set(variants)
    if unknown:
        raise ValueError(f"ensemble.variant_weights names unknown variants {sorted(unknown)}")
    return [float(configured.get(v, 1.0)) for v in variants]


def aggregate_studies(images: pd.DataFrame, prob_columns: Sequence[str]) -> pd.DataFrame:
    """Study-level rows: mean probability over a study's views.

    Args:
        images: per-image rows with ``study_id``, ``label`` and the probability columns
            (other study-constant columns such as ``patient_id``, ``dataset``,
            ``body_part``, ``split`` are carried over when present).
        prob_columns: the probability columns to average.

    Returns:
        One row per study, sorted by ``study_id``, with ``n_views``.

    Raises:
        ValueError: a study has views with different labels.
    """
    keep = [c for c in ("split", "dataset", "body_part", "patient_id") if c in images.columns]
    grouped = images.groupby("study_id", sort=True)
    labels = grouped["label"].agg(["min", "max"])
    mixed = labels.index[labels["min"] != labels["max"]]
    if len(mixed):
        raise ValueError(f"study {mixed[0]!r} has views with different labels")
    out = grouped[list(prob_columns)].mean()
    out["label"] = labels["min"]
    out["n_views"] = grouped.size()
    for column in keep:
        out[column] = grouped[column].first()
    return out.reset_index()[["study_id", *keep, "label", "n_views", *prob_columns]]


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


def run_ensemble(
    variants: Sequence[str],
    params: EnsembleParams,
    images_csv: Path,
    split_csv: Path,
    pixels_path: Path,
    models_dir: Path,
    predictions_dir: Path,
) -> dict[str, float]:
    """The ``ensemble`` stage: predictions of every variant and their (raw) average on valid and test.

    The calibrator and the operating points are the next stage's (:mod:`mura.evaluation.calibrate`).

    Args:
        variants: the variant names (keys of ``models:``), in ensemble order.
        params: the ``ensemble`` section.
        images_csv: images.csv.
        split_csv: split.csv.
        pixels_path: the pixel cache.
        models_dir: folder holding ``<variant>.keras``.
        predictions_dir: where ``valid.csv`` and ``test.csv`` are written.

    Returns:
        The variant weights used.

    Raises:
        DataError: missing models, inconsistent inputs or an empty valid split.
    """
    from mura.errors import DataError
    from mura.evaluation.predict import model_paths, predict_images
    from mura.stage import write_csv

    paths = model_paths(variants, models_dir)
    weights = ensemble_weights(list(paths), params.variant_weights)
    images = pd.read_csv(images_csv).merge(pd.read_csv(split_csv), on="image_id", validate="one_to_one")
    frames = predict_images(paths, weights, images, np.load(pixels_path, mmap_mode="r"), params.batch_size)
    for split, frame in frames.items():
        write_csv(predictions_dir / f"{split}.csv", frame)
    if frames["valid"].empty:
        raise DataError("the valid split is empty: nothing to calibrate or choose operating points on")
    return dict(zip(paths, weights, strict=True))

"""The ensemble's output contract: the average of the variants' probabilities and its names (pure).

The seed averages the four models' probabilities; a study's probability is the mean of its
views' probabilities (the MURA protocol). Every layer that reads or writes ensemble outputs —
the ``ensemble`` and ``evaluate`` stages, the exported runtime, the served rows — takes the
names (``p_<variant>``, ``p_ensemble``) and the averaging from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = ["ENSEMBLE", "aggregate_studies", "average_probabilities", "ensemble_weights", "prob_column"]

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

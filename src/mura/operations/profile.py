"""The data profile a model version is compared with: what ``register`` stores and what the audit trail gives.

A profile holds the calibrated study probabilities and body parts, and per view the statistics
the audit trail records (pixel mean and standard deviation at model size, original height and
width). ``register`` computes the validation split's (:func:`validation_profile`) and stores it
with the model version (the ``reference_profile`` artifact); the drift report
(:mod:`mura.operations.drift`) builds the same from production (:func:`current_profile`).
Kept apart from the drift report so that editing the report or its scheduler does not change
the ``register`` stage's dependencies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mura.modeling.averaging import average_probabilities, prob_column
from mura.modeling.calibration import Calibrator

__all__ = ["REFERENCE_ARTIFACT", "current_profile", "reference_profile", "validation_profile"]

REFERENCE_ARTIFACT = "reference_profile"  # the pyfunc artifact key (and file stem)


def reference_profile(studies: pd.DataFrame, views: pd.DataFrame, source: str = "valid split") -> dict[str, Any]:
    """The profile of the validation data (pure).

    Args:
        studies: one row per study with ``probability`` (calibrated) and ``body_part``.
        views: one row per image with ``pixel_mean``, ``pixel_std``, ``height``, ``width``, ``body_part``.
        source: what the profile describes.
    """
    return {
        "source": source,
        "study": {
            "probability": studies["probability"].round(6).tolist(),
            "body_part": studies["body_part"].astype(str).tolist(),
        },
        "views": {k: views[k].round(3).tolist() for k in ("pixel_mean", "pixel_std", "height", "width")}
        | {"body_part": views["body_part"].astype(str).tolist()},
    }


def validation_profile(
    valid: pd.DataFrame,
    images: pd.DataFrame,
    pixels: np.ndarray,
    variants: Sequence[str],
    weights: Sequence[float],
    calibrator: Calibrator,
) -> dict[str, Any]:
    """The reference profile of a model from its validation predictions (what ``register`` stores).

    Args:
        valid: the ``ensemble`` stage's valid predictions (``image_id``, ``study_id``, ``p_<variant>``).
        images: images.csv (``image_id``; ``body_part``, ``width``, ``height`` when present).
        pixels: the model-size pixels of ``valid``'s rows, in its order, (N, S, S) uint8.
        variants, weights: the ensemble's variants and weights.
        calibrator: the served calibration map.
    """
    columns = [c for c in ("image_id", "body_part", "width", "height") if c in images.columns]
    rows = valid[["image_id", "study_id"]].merge(images[columns], on="image_id", how="left")
    raw = average_probabilities(valid[[prob_column(v) for v in variants]].to_numpy(np.float64), weights)
    body_part = rows["body_part"].fillna("unknown") if "body_part" in rows else pd.Series(["unknown"] * len(rows))
    per_image = pd.DataFrame({"study_id": rows["study_id"], "raw": raw, "body_part": body_part.to_numpy()})
    studies = per_image.groupby("study_id", sort=True).agg(raw=("raw", "mean"), body_part=("body_part", "first"))
    studies["probability"] = calibrator.apply(studies["raw"].to_numpy())
    flat = np.asarray(pixels, dtype=np.float64).reshape(len(pixels), -1)
    views = pd.DataFrame(
        {
            "pixel_mean": flat.mean(axis=1),
            "pixel_std": flat.std(axis=1),
            "height": rows["height"] if "height" in rows else np.nan,
            "width": rows["width"] if "width" in rows else np.nan,
            "body_part": body_part.to_numpy(),
        }
    )
    return reference_profile(studies.reset_index(), views)


def current_profile(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The same profile as :func:`reference_profile`, from audit records (pure)."""
    records = list(records)
    studies = pd.DataFrame(
        {"probability": [r["probability"] for r in records], "body_part": [r.get("body_part") or "unknown" for r in records]}
    )
    rows = [v | {"body_part": r.get("body_part") or "unknown"} for r in records for v in r.get("views", [])]
    views = pd.DataFrame(rows, columns=["pixel_mean", "pixel_std", "height", "width", "body_part"])
    return reference_profile(studies, views, source="audit trail")

"""Bulk predictions of every variant on the valid, test and external images (the ``ensemble`` stage's heavy part)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura.data.external import EXTERNAL_SPLIT
from mura.errors import DataError
from mura.modeling.averaging import ENSEMBLE, prob_column

logger = logging.getLogger(__name__)

__all__ = ["PREDICTION_SPLITS", "model_paths", "predict_images"]

PREDICTION_SPLITS = ("valid", "test", EXTERNAL_SPLIT)  # external: FracAtlas / GRAZPEDWRI-DX when present (else empty)
CHUNK_ROWS = 1024  # cache rows read at a time (100 MiB at 320²)
KEPT_COLUMNS = ["image_id", "split", "dataset", "body_part", "patient_id", "study_id", "label"]


def model_paths(variants: Sequence[str], models_dir: Path) -> dict[str, Path]:
    """``models/<variant>.keras`` for every variant, checked to exist.

    Raises:
        DataError: no variants, or a model file is missing.
    """
    if not variants:
        raise DataError("params.yaml has no models: nothing to ensemble")
    paths = {name: models_dir / f"{name}.keras" for name in variants}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"missing trained model {missing[0]}: run `dvc repro train` first")
    return paths


def study_subset(frame: pd.DataFrame, max_studies: int, seed: int) -> np.ndarray:
    """Positions of ``frame``'s rows in a seeded random ``max_studies`` of its studies (all when 0 or more).

    Whole studies, so the study-level metrics stay defined on what is kept (rehearsals at scale).
    """
    studies = np.unique(frame["study_id"].astype(str).to_numpy())
    if not 0 < max_studies < len(studies):
        return np.arange(len(frame))
    kept = np.random.default_rng(seed).choice(studies, size=max_studies, replace=False)
    return np.flatnonzero(frame["study_id"].astype(str).isin(kept).to_numpy())


def predict_images(
    paths: dict[str, Path],
    weights: Sequence[float],
    images: pd.DataFrame,
    pixels: np.ndarray,
    batch_size: int,
    max_studies: int = 0,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Per-image probabilities of every variant and of their weighted average, for valid and test.

    Args:
        paths: variant → ``.keras`` file, in ensemble order.
        weights: one weight per variant (same order).
        images: images.csv merged with split.csv (row i = cache row i).
        pixels: the (N, S, S) uint8 cache.
        batch_size: images per compiled call (every batch is padded to it: one traced shape).
        max_studies: 0, or predict only a seeded random subset of this many studies per split.
        seed: the subset's seed.

    Returns:
        ``{split: frame}`` with the identifying columns and ``p_<variant>``, ``p_ensemble``
        (rounded to 1e-8 so the CSV bytes are stable).

    Raises:
        DataError: the cache and the listing disagree.
    """
    from mura.modeling.inference import VariantRunner  # lazy: imports Keras: only on the Keras path

    if len(pixels) != len(images):
        raise DataError(f"the pixel cache has {len(pixels)} rows but images.csv has {len(images)}: rerun `dvc repro ingest`")
    runner = VariantRunner.from_paths(paths, batch_size=batch_size, fixed_batch=True)
    frames = {}
    for split in PREDICTION_SPLITS:
        rows = np.flatnonzero((images["split"] == split).to_numpy())
        rows = rows[study_subset(images.iloc[rows], max_studies, seed)]
        frame = images.iloc[rows][KEPT_COLUMNS].reset_index(drop=True)
        # A chunk of the cache in memory at a time, whatever the split's size.
        chunks = [rows[k : k + CHUNK_ROWS] for k in range(0, len(rows), CHUNK_ROWS)]
        parts = [runner.predict_ensemble(np.asarray(pixels[chunk]), weights) for chunk in chunks]
        if parts:
            per_variant, ensemble = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        else:
            per_variant, ensemble = np.zeros((0, len(paths))), np.zeros(0)
        for k, name in enumerate(paths):
            frame[prob_column(name)] = np.round(per_variant[:, k], 8)
        frame[prob_column(ENSEMBLE)] = np.round(ensemble, 8)
        frames[split] = frame
        logger.info("ensemble: predicted %d %s images with %d variants", len(frame), split, len(paths))
    return frames

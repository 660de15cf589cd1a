"""The ``ensemble`` step: batched predictions of every variant on valid and test, and thresholds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mura.config import EnsembleParams, Params
from mura.ensemble import aggregate_studies, ensemble_weights, threshold_for_recall
from mura.errors import DataError
from mura.evaluate import prob_column
from mura.stage import write_csv, write_json

logger = logging.getLogger(__name__)

PREDICTION_SPLITS = ("valid", "test")


def model_paths(params: Params, models_dir: Path) -> dict[str, Path]:
    """``models/<variant>.keras`` for every variant in params, checked to exist."""
    paths = {name: models_dir / f"{name}.keras" for name in params.models}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DataError(f"missing trained model {missing[0]}: run `dvc repro train` first")
    if not paths:
        raise DataError("params.yaml has no models: nothing to ensemble")
    return paths


def choose_thresholds(valid: pd.DataFrame, params: EnsembleParams) -> dict[str, float]:
    """Operating points on the valid split's studies: the seed's 0.5 and one for the target recall."""
    studies = aggregate_studies(valid, [prob_column("ensemble")])
    return {
        "default": 0.5,
        "high_sensitivity": threshold_for_recall(studies["label"].to_numpy(), studies[prob_column("ensemble")].to_numpy(),
                                                 params.target_recall),  # fmt: skip
    }


def predict_splits(params: Params, images_csv: Path, split_csv: Path, pixels_path: Path, models_dir: Path,
                   predictions_dir: Path, thresholds_json: Path) -> dict[str, float]:  # fmt: skip
    """Write per-image predictions for valid and test, and the thresholds chosen on valid.

    Returns:
        The thresholds.
    """
    from mura.inference import VariantRunner

    paths = model_paths(params, models_dir)
    images = pd.read_csv(images_csv).merge(pd.read_csv(split_csv), on="image_id", validate="one_to_one")
    pixels = np.load(pixels_path, mmap_mode="r")
    if len(pixels) != len(images):
        raise DataError(f"{pixels_path} has {len(pixels)} rows but {images_csv} has {len(images)}: rerun `dvc repro ingest`")
    runner = VariantRunner.from_paths(paths, batch_size=params.ensemble.batch_size, fixed_batch=True)
    weights = ensemble_weights(list(paths), params.ensemble.weights)
    keep = ["image_id", "split", "dataset", "body_part", "patient_id", "study_id", "label"]
    frames = {}
    for split in PREDICTION_SPLITS:
        rows = np.flatnonzero((images["split"] == split).to_numpy())
        frame = images.iloc[rows][keep].reset_index(drop=True)
        if len(rows):
            per_variant, ensemble = runner.predict_ensemble(np.asarray(pixels[rows]), weights)
        else:
            per_variant, ensemble = np.zeros((0, len(paths))), np.zeros(0)
        for k, name in enumerate(paths):
            frame[prob_column(name)] = np.round(per_variant[:, k], 8)
        frame[prob_column("ensemble")] = np.round(ensemble, 8)
        frames[split] = frame
        write_csv(predictions_dir / f"{split}.csv", frame)
        logger.info("ensemble: predicted %d %s images with %d variants", len(frame), split, len(paths))
    if frames["valid"].empty:
        raise DataError("the valid split is empty: cannot choose operating points")
    thresholds = choose_thresholds(frames["valid"], params.ensemble)
    write_json(thresholds_json, {"thresholds": thresholds, "chosen_on": "valid", "level": "study",
                                 "target_recall": params.ensemble.target_recall, "weights": dict(zip(paths, weights))})  # fmt: skip
    return thresholds

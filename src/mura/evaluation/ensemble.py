"""The ``ensemble`` stage: every variant's predictions on valid and test (the averaging is :mod:`mura.modeling.ensemble`).

Operating points are chosen on ``valid`` by the ``calibrate`` stage and applied unchanged to ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura.config import EnsembleParams
from mura.errors import DataError
from mura.evaluation.predict import model_paths, predict_images
from mura.modeling.ensemble import ensemble_weights
from mura.stage import write_csv

__all__ = ["run_ensemble"]


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
    paths = model_paths(variants, models_dir)
    weights = ensemble_weights(list(paths), params.variant_weights)
    images = pd.read_csv(images_csv).merge(pd.read_csv(split_csv), on="image_id", validate="one_to_one")
    frames = predict_images(paths, weights, images, np.load(pixels_path, mmap_mode="r"), params.batch_size)
    for split, frame in frames.items():
        write_csv(predictions_dir / f"{split}.csv", frame)
    if frames["valid"].empty:
        raise DataError("the valid split is empty: nothing to calibrate or choose operating points on")
    return dict(zip(paths, weights, strict=True))

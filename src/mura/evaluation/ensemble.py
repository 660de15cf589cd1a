"""The ``ensemble`` stage: every variant's predictions on valid and test (the averaging is :mod:`mura.modeling.averaging`).

Operating points are chosen on ``valid`` by the ``calibrate`` stage and applied unchanged to ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mura.config import EnsembleParams
from mura.errors import DataError
from mura.evaluation.predict import model_paths, predict_images
from mura.modeling.averaging import ensemble_weights
from mura.stage import Layout, write_csv

__all__ = ["run_ensemble"]


@dataclass(frozen=True)
class EnsemblePaths:
    """What the ``ensemble`` stage reads and writes (defaults: the standard layout).

    Attributes:
        images: images.csv.
        pixels: the pixel cache.
        split: split.csv.
        models_dir: folder holding ``<variant>.keras``.
        predictions: where ``valid.csv`` and ``test.csv`` are written.
    """

    images: Path = Layout.IMAGES
    pixels: Path = Layout.PIXELS
    split: Path = Layout.SPLIT
    models_dir: Path = Layout.MODELS
    predictions: Path = Layout.PREDICTIONS


def run_ensemble(variants: Sequence[str], params: EnsembleParams, paths: EnsemblePaths, seed: int = 0) -> dict[str, float]:
    """The ``ensemble`` stage: predictions of every variant and their (raw) average on valid and test.

    The calibrator and the operating points are the next stage's (:mod:`mura.evaluation.calibrate`).

    Args:
        variants: the variant names (keys of ``models:``), in ensemble order.
        params: the ``ensemble`` section.
        paths: what it reads and writes.
        seed: the seed of ``params.max_studies``'s subset.

    Returns:
        The variant weights used.

    Raises:
        DataError: missing models, inconsistent inputs or an empty valid split.
    """
    models = model_paths(variants, paths.models_dir)
    weights = ensemble_weights(list(models), params.variant_weights)
    images = pd.read_csv(paths.images).merge(pd.read_csv(paths.split), on="image_id", validate="one_to_one")
    pixels = np.load(paths.pixels, mmap_mode="r")
    frames = predict_images(models, weights, images, pixels, params.batch_size, params.max_studies, seed)
    for split, frame in frames.items():
        write_csv(paths.predictions / f"{split}.csv", frame)
    if frames["valid"].empty:
        raise DataError("the valid split is empty: nothing to calibrate or choose operating points on")
    return dict(zip(models, weights, strict=True))

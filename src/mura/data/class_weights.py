"""Class weights for the weighted binary cross-entropy (a pure function, and the ``class_weights`` stage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mura.config import DatasetName
from mura.data.sources import FEEDBACK_DATASET
from mura.errors import DataError
from mura.stage import Layout, write_json


def compute_class_weights(labels: Sequence[int] | np.ndarray) -> dict[str, float]:
    """The seed's class weights, with its typo fixed.

    The seed writes ``w2 = abnormal / (normal + normal)``; the intended and
    implemented formula is ``w0 = abnormal / total`` for class 0 (normal) and
    ``w1 = normal / total`` for class 1 (abnormal), so the minority class
    weighs more and the two weights sum to one.

    Args:
        labels: training labels (0 normal, 1 abnormal).

    Returns:
        ``{"0": w0, "1": w1}``.

    Raises:
        DataError: no labels, a label other than 0/1, or only one class present.
    """
    y = np.asarray(labels)
    if y.size == 0:
        raise DataError("class_weights: the training split is empty for the selected datasets (data.train_datasets)")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"class_weights: labels must be 0 or 1, found {sorted(set(y.tolist()) - {0, 1})[:3]}")
    normal, abnormal = int((y == 0).sum()), int((y == 1).sum())
    if normal == 0 or abnormal == 0:
        raise DataError(f"class_weights: the training split has only one class (normal={normal}, abnormal={abnormal})")
    total = normal + abnormal
    return {"0": abnormal / total, "1": normal / total}


@dataclass(frozen=True)
class ClassWeightsPaths:
    """What the ``class_weights`` stage reads and writes (defaults: the standard layout)."""

    images: Path = Layout.IMAGES
    split: Path = Layout.SPLIT
    out: Path = Layout.CLASS_WEIGHTS


def run_class_weights(train_datasets: tuple[DatasetName, ...], paths: ClassWeightsPaths) -> dict[str, float]:
    """The ``class_weights`` stage: weights over the training split of ``data.train_datasets``, written as JSON.

    Returns:
        ``{"0": w0, "1": w1}``.
    """

    rows = pd.read_csv(paths.images, usecols=["image_id", "dataset", "label"]).merge(pd.read_csv(paths.split), on="image_id")
    train = rows[(rows["split"] == "train") & rows["dataset"].isin((*train_datasets, FEEDBACK_DATASET))]
    weights = compute_class_weights(train["label"].to_numpy())
    write_json(paths.out, weights)
    return weights

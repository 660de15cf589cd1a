"""What determines one variant's training (:class:`VariantSpec`, from ``params.yaml``) and where it reads and writes (pure).

Kept apart from the training loop (which imports Keras) so the MLflow bookkeeping
(:mod:`mura.modeling.registry`) and the stage shell read it without either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from mura.config import AugmentParams, DatasetName, ModelSpec, Params, TrainParams
from mura.stage import Layout

__all__ = ["TrainPaths", "VariantPaths", "VariantSpec"]


@dataclass(frozen=True)
class VariantSpec:
    """Everything that determines one variant's training (the ``train@<variant>`` stage's params).

    Attributes:
        name: the variant (a key of ``models:``).
        model: its ``models.<name>`` spec.
        train: the shared ``train:`` section.
        augment: the ``augment:`` section.
        image_size: ``data.image_size``.
        train_datasets: ``data.train_datasets``.
        seed: the global seed.
    """

    name: str
    model: ModelSpec
    train: TrainParams
    augment: AugmentParams
    image_size: int
    train_datasets: tuple[DatasetName, ...]
    seed: int

    @classmethod
    def from_params(cls, params: Params, variant: str) -> VariantSpec:
        """Select one variant's params (``ConfigError`` for an unknown variant).

        A variant's own ``learning_rate`` replaces ``train.learning_rate`` in its ``train``
        (so the run's logged ``train.learning_rate`` is the rate it trained with).
        """
        model = params.model(variant)
        train = params.train
        if model.learning_rate is not None:
            train = dataclasses.replace(train, learning_rate=model.learning_rate)
        return cls(
            variant,
            model,
            train,
            params.augment,
            params.data.image_size,
            params.data.train_datasets,
            params.seed,
        )


@dataclass(frozen=True)
class VariantPaths:
    """Inputs and outputs of one ``train@<variant>`` stage."""

    images: Path
    split: Path
    pixels: Path
    class_weights: Path
    model: Path  # the best weights, ``<models_dir>/<variant>.keras``
    reports: Path  # ``<reports_dir>/<variant>/``: history.csv, history.png, metrics.json
    work: Path  # resume backups and logging that failed, ``<models_dir>/checkpoints/<variant>``


@dataclass(frozen=True)
class TrainPaths:
    """What the ``train@<variant>`` stages read and write (defaults: the standard layout)."""

    images: Path = Layout.IMAGES
    pixels: Path = Layout.PIXELS
    split: Path = Layout.SPLIT
    class_weights: Path = Layout.CLASS_WEIGHTS
    models_dir: Path = Layout.MODELS
    reports_dir: Path = Layout.TRAIN_REPORTS

    def for_variant(self, variant: str) -> VariantPaths:
        """One variant's paths."""
        return VariantPaths(
            images=self.images,
            split=self.split,
            pixels=self.pixels,
            class_weights=self.class_weights,
            model=self.models_dir / f"{variant}.keras",
            reports=self.reports_dir / variant,
            work=self.models_dir / "checkpoints" / variant,
        )

"""What determines one variant's training: :class:`VariantSpec`, selected from ``params.yaml`` (pure).

Kept apart from the training loop (which imports Keras) so the MLflow bookkeeping
(:mod:`mura.modeling.registry`) and the stage shell read it without either.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mura.config import AugmentParams, DatasetName, ModelSpec, Params, TrainParams

__all__ = ["VariantSpec"]


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

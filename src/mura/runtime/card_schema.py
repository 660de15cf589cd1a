"""The model card's contract: one typed, versioned definition, built by ``register`` and read by the apps.

:func:`mura.packaging.model_card.build_model_card` fills it from the pipeline's outputs; it is
written as ``model_card.json`` (an artifact of every registered ``mura-ensemble`` version and
``reports/model_card.json``) and read back through :meth:`ModelCard.from_dict` by the served
process (the web UI's "About this model"). A card that lacks a field, has one of the wrong type,
or comes from a newer version is refused with one line naming the source and the field.

Versions:
    1: cards written before it carried ``"schema": "mura-model-card/1"`` instead of
       ``schema_version``, and ``{}`` for an absent evaluation; both still load.
    2: this version: ``localization``, the ``localize`` stage's box levels and test figures.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mura.config import build_dataclass
from mura.errors import ConfigError

__all__ = [
    "CARD_SCHEMA",
    "CardModel",
    "CardOperatingPoints",
    "Evaluation",
    "IntendedUse",
    "ModelCard",
    "TrainingData",
]

CARD_SCHEMA = 2


@dataclass(frozen=True)
class IntendedUse:
    """What the model is for, for whom, and what it reads."""

    purpose: str
    users: tuple[str, ...]
    inputs: str


@dataclass(frozen=True)
class TrainingData:
    """What it was trained on: counts per split and body part, and the data's fingerprint."""

    images: int
    synthetic: bool
    dataset_fingerprint: str = "unknown"
    datasets: tuple[str, ...] = ()
    images_per_split_and_body_part: dict[str, dict[str, int]] = field(default_factory=dict)
    studies_per_split: dict[str, int] = field(default_factory=dict)
    patients_per_split: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CardModel:
    """The ensemble: its variants (name → architecture), how they are averaged and calibrated, how it runs."""

    variants: dict[str, str]
    variant_weights: dict[str, float]
    average: str
    study_probability: str
    calibration: dict[str, Any]
    image_size: int
    runtime: str
    allowed_precisions: tuple[str, ...]


@dataclass(frozen=True)
class CardOperatingPoints:
    """The served operating point, every point's threshold, and what they were chosen on."""

    served: str
    thresholds: dict[str, float]
    chosen_on: str


@dataclass(frozen=True)
class Evaluation:
    """The test split's study-level figures.

    Attributes:
        operating_points: point → ``threshold``, ``n`` and each headline metric as
            ``{value, ci_low, ci_high}`` (95 % patient-bootstrap CI).
        per_body_part: body part → ``n`` and each headline metric at the default point.
        calibration: group → metric → ``before``/``after`` calibration.
    """

    split: str = "test"
    level: str = "study"
    operating_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_body_part: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, dict[str, dict[str, float | None]]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelCard:
    """The card of one registered version (Mitchell et al. 2019, "Model Cards for Model Reporting").

    Attributes:
        model_name: the registered model's name.
        synthetic_data: trained on synthetic phantoms (then: never clinical, said first).
        intended_use, out_of_scope, limitations: what it is for and not for.
        training_data, model, operating_points: what it learned from, what it is, how it decides.
        evaluation: the test figures (None before an evaluation exists).
        localization: the box levels and, where annotated boxes exist, the test localisation figures
            (``reports/localization.json``); empty before the ``localize`` stage.
        lineage: commit, package version, schema versions, fingerprint, run id, registered version.
        schema_version: this contract's version.
    """

    model_name: str
    synthetic_data: bool
    intended_use: IntendedUse
    out_of_scope: tuple[str, ...]
    training_data: TrainingData
    model: CardModel
    operating_points: CardOperatingPoints
    limitations: tuple[str, ...]
    lineage: dict[str, Any]
    evaluation: Evaluation | None = None
    localization: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.schema_version > CARD_SCHEMA:
            raise ConfigError(
                f"model card schema version {self.schema_version}: this mura reads versions 1-{CARD_SCHEMA}: upgrade mura"
            )

    def with_lineage(self, **more: Any) -> ModelCard:
        """The same card with more lineage (e.g. the registered version a server resolved)."""
        return dataclasses.replace(self, lineage={**self.lineage, **more})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "model card") -> ModelCard:
        """Build from a mapping of any supported version; one line naming ``source`` and the field when it is wrong.

        Raises:
            ConfigError: a missing, unknown or mistyped field, or a newer schema version.
        """
        if isinstance(doc, dict) and "schema" in doc:  # written before the card was typed
            doc = {k: v for k, v in doc.items() if k != "schema"} | {"schema_version": 1}
            doc = _untyped_card(doc)
        card: ModelCard = build_dataclass(cls, doc, source)
        return card


def _untyped_card(doc: dict[str, Any]) -> dict[str, Any]:
    """An untyped card's sections in this version's shape (the model's nested ``ensemble``/``runtimes``, ``{}`` evaluation)."""
    model = dict(doc.get("model") or {})
    ensemble, runtimes = model.pop("ensemble", {}), model.pop("runtimes", {})
    model |= {"average": ensemble.get("average", ""), "variant_weights": ensemble.get("variant_weights", {})}
    model |= {"runtime": runtimes.get("runtime", "keras"), "allowed_precisions": runtimes.get("allowed_precisions", ["f32"])}
    return doc | {"model": model, "evaluation": doc.get("evaluation") or None}

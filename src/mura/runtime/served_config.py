"""The served model's configuration: one typed, versioned object.

``register`` writes it (``ensemble_config.json``, an artifact of the
``mura-ensemble`` pyfunc); the pyfunc service, the Python API and the web UI
read it through :meth:`ServingConfig.load`, never as a loose dict.

Versions:
    1: written before the schema was versioned (no ``schema_version`` key; the
       variant weights were under ``weights``). Still loads.
    2: typed and versioned; the variant weights under ``variant_weights``. Loads (Keras runtime).
    3: the optimized runtime (``runtime``, ``optimized_precision``, ``precision_check``); bf16 allowed
       when ``optimized_precision`` is ``bf16``. Loads.
    4: ``allowed_precisions`` (float32, and bf16/int8 when register proved them harmless). Loads
       (uncalibrated: the identity map).
    5: ``calibration``, the map every entry point applies to the ensemble's probability. Loads.
    6: ``keras_variants_uri``, where the ``.keras`` files are when they are not among the
       pyfunc's artifacts (a model with an optimized artifact keeps them out, so a server on the
       optimized runtime does not copy them at every start). Loads.
    7: ``precision_check`` is a typed, versioned report
       (:class:`~mura.runtime.precision_check.PrecisionCheck`), ``null`` without an optimized export. Loads.
    8: this version: ``box_levels``, the heat level of the boxes at each box operating point (the
       ``localize`` stage's); older models draw no boxes.
A model whose config has a newer version than this code reads fails with one
line naming the version it needs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mura import __version__
from mura.config import Precision, ResizePolicy, ServingRuntime, build_dataclass
from mura.errors import ConfigError
from mura.modeling.calibration import Calibrator
from mura.runtime.precision_check import PrecisionCheck

__all__ = ["CONFIG_ARTIFACT", "SCHEMA_VERSION", "ServingConfig", "ValidationMetrics"]

SCHEMA_VERSION = 8
CONFIG_ARTIFACT = "ensemble_config"  # the pyfunc artifact key (and file stem) of the config
CARD_ARTIFACT = "model_card"  # the pyfunc artifact key (and file stem) of the model card's JSON


@dataclass(frozen=True)
class ValidationMetrics:
    """The ensemble's validation metrics for one body part (or ``all``), study level, threshold 0.5."""

    group: str
    n: int
    accuracy: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    roc_auc: float | None = None
    kappa: float | None = None


@dataclass(frozen=True)
class ServingConfig:
    """What the served ensemble needs to decode, predict and explain, and where it came from.

    Attributes:
        variants: variant names, in the order of the combined model's outputs.
        variant_weights: weight of each variant in the average.
        thresholds: operating point → study threshold (chosen on valid, on the calibrated probability).
        operating_point: the served operating point (a key of ``thresholds``).
        image_size: model input side.
        resize: resize policy of the training cache.
        max_pixels: per-upload pixel limit.
        serve_batch_size: largest batch the served model runs at once.
        synthetic_data: trained on synthetic phantoms (never a clinical model).
        validation_per_body_part: ensemble validation metrics per body part and ``all``.
        metrics: the headline metrics of ``reports/metrics.json``.
        dataset_fingerprint: SHA-256 of images.csv + split.csv.
        git_commit: code version that trained it.
        mura_version: package version that registered it.
        runtime: ``auto`` | ``optimized`` | ``keras`` (see :mod:`mura.runtime.runners`).
        optimized_precision: the precision the optimized runtime served on the machine that
            registered it (informative: each server times the allowed ones on its own CPU).
        allowed_precisions: precisions the optimized runtime may serve: ``f32`` always, ``bf16`` and
            ``int8`` only when ``precision_check`` proved them harmless.
        precision_check: the register-time comparison of the optimized runtime with Keras on the
            validation split (max |Δp|, study-label agreement per operating point, verdicts); None
            when Keras serves (no optimized export).
        calibration: the map from the ensemble's raw probability to the served one (``calibrate`` stage).
        keras_variants_uri: MLflow artifact URI of the folder of ``<variant>.keras`` files the Keras
            runtime downloads when they are not among the pyfunc's artifacts (``runs:/<id>/keras``);
            empty: they are artifacts of the pyfunc.
        box_levels: box operating point (``high_sensitivity``, ``high_specificity``) → the heat level its
            boxes are cut at (:mod:`mura.modeling.boxes`); empty: no boxes.
        schema_version: version of this schema.
    """

    variants: tuple[str, ...]
    variant_weights: dict[str, float]
    thresholds: dict[str, float]
    operating_point: str
    image_size: int
    resize: ResizePolicy
    max_pixels: int
    serve_batch_size: int
    synthetic_data: bool
    validation_per_body_part: dict[str, ValidationMetrics] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    dataset_fingerprint: str = "unknown"
    git_commit: str = "unknown"
    mura_version: str = "unknown"
    runtime: ServingRuntime = "keras"
    optimized_precision: Precision = "f32"
    allowed_precisions: tuple[Precision, ...] = ("f32",)
    precision_check: PrecisionCheck | None = None
    calibration: Calibrator = field(default_factory=Calibrator)
    keras_variants_uri: str = ""
    box_levels: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.operating_point not in self.thresholds:
            raise ConfigError(f"served operating point {self.operating_point!r} has no threshold ({sorted(self.thresholds)})")
        missing = [v for v in self.variants if v not in self.variant_weights]
        if missing:
            raise ConfigError(f"served config has no weight for variant {missing[0]!r}")

    @property
    def threshold(self) -> float:
        """The study threshold of the served operating point."""
        return float(self.thresholds[self.operating_point])

    @property
    def weights_in_order(self) -> list[float]:
        """Variant weights in :attr:`variants` order."""
        return [float(self.variant_weights[v]) for v in self.variants]

    def validation_for(self, body_part: str | None) -> ValidationMetrics | None:
        """Validation metrics of ``body_part``, else of ``all``, else None."""
        return self.validation_per_body_part.get(body_part or "all") or self.validation_per_body_part.get("all")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (what :meth:`save` writes)."""
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write the config as sorted JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ServingConfig:
        """Build from a mapping of any supported schema version.

        Raises:
            ConfigError: a newer schema than this code reads, or an invalid config (one line).
        """
        if not isinstance(doc, dict):
            raise ConfigError("served model config must be a JSON object")
        version = int(doc.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"this model's config has schema version {version}; this mura ({_version()}) reads "
                f"versions 1-{SCHEMA_VERSION}: upgrade mura to load it"
            )
        doc = dict(doc)
        if version == 1:
            doc["variant_weights"] = doc.pop("weights")
        if version <= 3:
            doc["allowed_precisions"] = ["f32", "bf16"] if doc.get("optimized_precision") == "bf16" else ["f32"]
        if version <= 6 and not doc.get("precision_check"):
            doc["precision_check"] = None  # an empty mapping meant "no export"
        doc["schema_version"] = SCHEMA_VERSION
        parts = doc.get("validation_per_body_part") or {}
        doc["validation_per_body_part"] = {k: {**v, "n": int(v.get("n") or 0)} for k, v in parts.items()}
        try:
            config: ServingConfig = build_dataclass(cls, doc, "served model config")
        except ConfigError as exc:
            raise ConfigError(f"cannot read the served model config (schema version {version}): {exc}") from None
        return config

    @classmethod
    def load(cls, path: str | Path) -> ServingConfig:
        """Read ``ensemble_config.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _version() -> str:

    return __version__

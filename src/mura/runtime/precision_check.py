"""The register-time check of reduced numeric precisions against Keras: one typed, versioned report.

``register`` runs the optimized runtime in every precision it can on the validation images and
compares each with Keras (:func:`mura.packaging.export.check_precision`); the result is a
:class:`PrecisionCheck`. It travels inside the served config (``ServingConfig.precision_check``),
so a server knows which precisions it may use and why, and into the model version's tags.

Versions:
    1: this version (the fields below). Reports written before it was versioned carry the same
       keys without ``schema_version`` and load as version 1.
A report from a newer version is refused with one line naming the version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mura.config import Precision, build_dataclass
from mura.errors import ConfigError

__all__ = ["PRECISION_CHECK_SCHEMA", "PrecisionCheck", "PrecisionLimits", "RuntimeComparison"]

PRECISION_CHECK_SCHEMA = 1


@dataclass(frozen=True)
class PrecisionLimits:
    """How close a reduced numeric precision must stay to Keras float32 to be allowed (``register.reduced_*``)."""

    max_abs_dp: float
    min_agreement: float


@dataclass(frozen=True)
class RuntimeComparison:
    """How far one runtime precision's probabilities are from Keras's on the validation split.

    Attributes:
        max_abs_dp: largest |Δp| over every variant and the ensemble.
        agreement: operating point → fraction of studies whose label is the same as Keras's.
        studies: validation studies compared.
        images: validation images compared.
        variant_max_abs_dp: each variant's own largest |Δp|, in the export's output order (which
            variants a reduced precision hurts).
    """

    max_abs_dp: float
    agreement: dict[str, float]
    studies: int = 0
    images: int = 0
    variant_max_abs_dp: tuple[float, ...] = ()

    @property
    def worst_agreement(self) -> float:
        """The smallest study-label agreement over the operating points (1.0 without any)."""
        return min(self.agreement.values(), default=1.0)


@dataclass(frozen=True)
class PrecisionCheck:
    """Which precisions the optimized runtime may serve, with the figures that decided it.

    Attributes:
        limits: the limits a reduced precision had to keep within (None in reports older than them).
        f32, bf16, int8: each precision's comparison with Keras (None where it did not run here:
            no native bf16, or no int8 export).
        verdicts: ``bf16``/``int8`` → why it was allowed or rejected, with the figures.
        allowed: the precisions a server may use (``f32`` always).
        precision: the fastest allowed one on the machine that registered the model.
        reason: the verdicts in one line, for logs and the model card.
        int8_variants: when int8 was kept only for some variants (the others float32), those variants.
        schema_version: this contract's version.
    """

    limits: PrecisionLimits | None = None
    f32: RuntimeComparison | None = None
    bf16: RuntimeComparison | None = None
    int8: RuntimeComparison | None = None
    verdicts: dict[str, str] = field(default_factory=dict)
    allowed: tuple[Precision, ...] = ("f32",)
    precision: Precision = "f32"
    reason: str = ""
    int8_variants: tuple[str, ...] = ()
    schema_version: int = PRECISION_CHECK_SCHEMA

    def __post_init__(self) -> None:
        if self.schema_version > PRECISION_CHECK_SCHEMA:
            raise ConfigError(
                f"precision check schema version {self.schema_version}: this mura reads versions "
                f"1-{PRECISION_CHECK_SCHEMA}: upgrade mura to load it"
            )

    def comparison(self, precision: Precision) -> RuntimeComparison | None:
        """The comparison of ``precision`` with Keras, or None when it did not run."""
        value: RuntimeComparison | None = getattr(self, precision)
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: Any, source: str = "precision check") -> PrecisionCheck:
        """Build from a mapping; a wrong or newer report fails with one line naming ``source`` and the field.

        Raises:
            ConfigError: a missing or mistyped field, an unknown key, or a newer schema version.
        """
        check: PrecisionCheck = build_dataclass(cls, doc, source)
        return check

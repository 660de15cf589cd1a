"""``reports/thresholds.json``: the operating points, the variant weights and the calibration, defined once.

Written by the ``calibrate`` stage and read by ``evaluate`` and ``register`` through
:class:`OperatingPoints` only, so every reader sees the same typed fields. The file carries a
schema version; a file that lacks a field, has one of the wrong type, or comes from another
version is refused with one line naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mura.errors import DataError
from mura.modeling.calibration import Calibrator

__all__ = ["OPERATING_POINTS_SCHEMA", "OperatingPoints"]

OPERATING_POINTS_SCHEMA = 1
_RERUN = "rerun `dvc repro calibrate`"


@dataclass(frozen=True)
class OperatingPoints:
    """The study thresholds and how they were chosen.

    Attributes:
        thresholds: operating point (``default``, ``high_sensitivity``, ``high_specificity``) → threshold
            on the calibrated study probability.
        variant_weights: variant → its weight in the ensemble average.
        calibration: the calibrator (:meth:`Calibrator.to_dict`) and its record: the method requested,
            what it was fitted on, the number of studies, the out-of-fold check.
        target_recall, target_specificity: what the high-sensitivity and high-specificity points aim at.
        chosen_on, level, probability: the split, the level and the probability they were chosen on.
        schema_version: this contract's version.
    """

    thresholds: dict[str, float]
    variant_weights: dict[str, float]
    calibration: dict[str, Any] = field(default_factory=dict)
    target_recall: float | None = None
    target_specificity: float | None = None
    chosen_on: str = "valid"
    level: str = "study"
    probability: str = "calibrated"
    schema_version: int = OPERATING_POINTS_SCHEMA

    @property
    def calibrator(self) -> Calibrator:
        """The calibration map served with these thresholds (the identity when none was kept)."""
        return Calibrator.from_dict(self.calibration or None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the file (sorted keys, a trailing newline: stable bytes for DVC)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, doc: Any, source: str = "reports/thresholds.json") -> OperatingPoints:
        """Check and read a parsed file.

        Raises:
            DataError: not a mapping, another schema version, a missing or mistyped field.
        """
        if not isinstance(doc, dict):
            raise DataError(f"{source}: not a JSON object: {_RERUN}")
        version = doc.get("schema_version")
        if version != OPERATING_POINTS_SCHEMA:
            raise DataError(f"{source}: schema_version is {version!r}, this code reads {OPERATING_POINTS_SCHEMA}: {_RERUN}")
        for name in ("thresholds", "variant_weights"):
            if not isinstance(doc.get(name), dict) or not doc[name]:
                raise DataError(f"{source}: field {name!r} is missing or empty: {_RERUN}")
        if "default" not in doc["thresholds"]:
            raise DataError(f"{source}: field 'thresholds' has no 'default' operating point: {_RERUN}")
        try:
            points = cls(
                thresholds={str(k): float(v) for k, v in doc["thresholds"].items()},
                variant_weights={str(k): float(v) for k, v in doc["variant_weights"].items()},
                calibration=dict(doc.get("calibration") or {}),
                target_recall=None if doc.get("target_recall") is None else float(doc["target_recall"]),
                target_specificity=None if doc.get("target_specificity") is None else float(doc["target_specificity"]),
                chosen_on=str(doc.get("chosen_on", "valid")),
                level=str(doc.get("level", "study")),
                probability=str(doc.get("probability", "calibrated")),
            )
            points.calibrator  # noqa: B018 -- a calibration record that does not make a map is refused here
        except (TypeError, ValueError) as exc:
            raise DataError(f"{source}: a field has a wrong value ({exc}): {_RERUN}") from None
        return points

    @classmethod
    def load(cls, path: str | Path) -> OperatingPoints:
        """Read ``path``.

        Raises:
            DataError: the file is missing, not JSON, or not this contract (see :meth:`from_dict`).
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"missing {path}: run `dvc repro calibrate` first")
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}): {_RERUN}") from None
        return cls.from_dict(doc, str(path))

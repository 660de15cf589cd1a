"""What operators watch while the model serves: Prometheus metrics and the audit trail.

:class:`ServingMetrics` holds the Prometheus metrics of one server (web UI or DICOM node),
named by the Prometheus conventions (``_total`` counters, ``_seconds`` histograms in base
units, low-cardinality labels; nothing identifying in any label): studies by outcome,
latency per phase, requests in flight, the served study probability and labels per operating
point and body part, scope warnings by kind, and the model being served.

:class:`AuditTrail` appends one JSON line per answer (flushed as it is written, so a crash
loses nothing already answered; rotated by size): time, entry point, model name, version,
runtime and precision, the study probability (calibrated and raw), the label at every
operating point, the body part, the warnings, per-view image statistics (size, bit depth,
mean/std of the model's pixels, modality, photometric interpretation, X-ray unit model) and
the latency — and a study key that is a keyed hash (HMAC-SHA256 with a key kept beside the
trail), never a UID, a name or a file name. ``mura monitor`` compares these records with the
model's validation data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import logging.handlers
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from mura.data.sources import BODY_PARTS
from mura.data.uploads import DecodedUpload
from mura.runtime.predictor import Predictor, StudyResult, registered_name

__all__ = ["AuditTrail", "ServingMetrics", "view_statistics", "warning_kind"]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROBABILITY_BUCKETS = tuple(round(0.1 * k, 1) for k in range(1, 11))
KEY_FILE = ".audit-key"


def _body_part_label(part: str | None) -> str:
    """A bounded label value: one of the seven regions, ``unknown`` or ``other``."""
    if not part:
        return "unknown"
    return part if part in BODY_PARTS else "other"


def warning_kind(warning: str) -> str:
    """``modality``, ``body_part`` or ``other`` from a scope warning's text (a bounded label value)."""
    text = warning.split(": ", 1)[-1]
    if text.startswith("modality"):
        return "modality"
    if text.startswith("body part"):
        return "body_part"
    return "other"


class ServingMetrics:
    """The Prometheus metrics of one server (a registry of its own, so tests and servers never collide).

    Args:
        entry_point: ``web`` or ``dicom`` (the value of every metric's ``entry_point`` label).
        predictor: the loaded model (its name, version, runtime and precision go to ``mura_model_info``).
    """

    def __init__(self, entry_point: str, predictor: Predictor | None = None) -> None:
        self.entry_point = entry_point
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mura_studies",
            "Studies asked for, by outcome (answered, refused) and reason",
            ["entry_point", "outcome", "reason"],
            registry=r,
        )
        self.phase = Histogram(
            "mura_phase_seconds",
            "Time spent per phase of answering a study",
            ["entry_point", "phase"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("mura_in_flight_studies", "Studies being answered now", ["entry_point"], registry=r)
        self.probability = Histogram(
            "mura_study_probability",
            "Served (calibrated) study probability of abnormality",
            ["entry_point", "body_part"],
            buckets=PROBABILITY_BUCKETS,
            registry=r,
        )
        self.labels = Counter(
            "mura_study_labels",
            "Study labels per operating point",
            ["entry_point", "operating_point", "label", "body_part"],
            registry=r,
        )
        self.warnings = Counter("mura_scope_warnings", "Scope warnings given, by kind", ["entry_point", "kind"], registry=r)
        self.model = Info("mura_model", "The model being served", registry=r)
        # The DICOM node's delivery side (zero on the web UI).
        self.deliveries = Counter(
            "mura_deliveries", "Result sets sent to a destination, by outcome", ["entry_point", "outcome"], registry=r
        )
        self.undelivered = Gauge(
            "mura_undelivered_results", "Result sets waiting in the spool for a destination", ["entry_point"], registry=r
        )
        self.feedback = Counter(
            "mura_feedback", "Radiologists' assessments recorded, by assessment", ["entry_point", "assessment"], registry=r
        )
        if predictor is not None:
            runner = predictor.service.runner
            self.model.info(
                {
                    "name": registered_name(predictor.uri),
                    "version": str(predictor.version),
                    "runtime": str(predictor.service.runtime),
                    "precision": runner.precision,
                    "synthetic_data": str(predictor.config.synthetic_data).lower(),
                }
            )

    def refused(self, reason: str) -> None:
        """Count a study (or instance) refused, with a short fixed reason (``bad_input``, ``sop_class``, …)."""
        self.requests.labels(self.entry_point, "refused", reason).inc()

    def answered(self, result: StudyResult) -> None:
        """Count one answered study: its probability, labels and warnings."""
        part = _body_part_label(result.body_part)
        self.requests.labels(self.entry_point, "answered", "").inc()
        self.probability.labels(self.entry_point, part).observe(result.probability)
        for point, label in result.labels.items():
            self.labels.labels(self.entry_point, point, label, part).inc()
        for warning in result.warnings:
            self.warnings.labels(self.entry_point, warning_kind(warning)).inc()

    def time(self, phase: str) -> Any:
        """A context manager timing one phase (``decode``, ``inference``, ``heatmaps``, ``delivery``)."""
        return self.phase.labels(self.entry_point, phase).time()


def view_statistics(upload: DecodedUpload) -> dict[str, Any]:
    """Non-identifying facts of one view for drift monitoring (pure)."""
    pixels = np.asarray(upload.pixels, dtype=np.float64)
    return {
        "height": int(upload.gray.shape[0]),
        "width": int(upload.gray.shape[1]),
        "bits_stored": upload.bits_stored,
        "pixel_mean": round(float(pixels.mean()), 3),
        "pixel_std": round(float(pixels.std()), 3),
        "kind": upload.kind,
        "modality": upload.modality,
        "photometric": upload.photometric,
        "manufacturer_model": upload.manufacturer_model,
    }


class AuditTrail:
    """One JSON line per answer in ``<folder>/audit.jsonl`` (rotated at ``max_bytes``, ``backups`` kept).

    Args:
        folder: where the trail and its key live (created).
        max_bytes: rotate when the file reaches this size.
        backups: rotated files kept.
    """

    def __init__(self, folder: Path, max_bytes: int = 50 * 2**20, backups: int = 10) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / KEY_FILE
        if not key_file.exists():
            key_file.write_bytes(secrets.token_bytes(32))
            key_file.chmod(0o600)
        self._key = key_file.read_bytes()
        self.path = self.folder / "audit.jsonl"
        self._logger = logging.getLogger(f"mura.audit.{id(self)}")
        self._logger.propagate = False
        self._logger.setLevel(logging.INFO)
        self._handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def study_key(self, identity: str | bytes) -> str:
        """A keyed hash of what identifies the study (a StudyInstanceUID, or the uploaded bytes)."""
        data = identity.encode() if isinstance(identity, str) else identity
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()[:32]

    def record(
        self,
        entry_point: str,
        predictor: Predictor,
        result: StudyResult,
        decoded: Sequence[tuple[str, DecodedUpload]],
        identity: str | bytes,
        latency_s: float,
    ) -> dict[str, Any]:
        """Append one answer (flushed before this returns) and return the record."""
        runner = predictor.service.runner
        record = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "entry_point": entry_point,
            "model": {
                "uri": predictor.uri,
                "version": str(predictor.version),
                "runtime": str(predictor.service.runtime),
                "precision": runner.precision,
            },
            "study_key": self.study_key(identity),
            "probability": round(result.probability, 6),
            "probability_raw": None if result.probability_raw is None else round(result.probability_raw, 6),
            "labels": result.labels,
            "operating_point": result.operating_point,
            "body_part": result.body_part,
            "warnings": [warning_kind(w) for w in result.warnings],
            "views": [
                view_statistics(upload) | {"probability": round(v.probability, 6)}
                for (_, upload), v in zip(decoded, result.views, strict=True)
            ],
            "latency_s": round(latency_s, 4),
            "synthetic_model": result.synthetic_data,
        }
        self._logger.info(json.dumps(record, sort_keys=True))
        self._handler.flush()
        return record

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()

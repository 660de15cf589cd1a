"""Prometheus metrics and the audit trail (no server here: the registry's own samples and the file)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from mura.data.uploads import DecodedUpload
from mura.operations.telemetry import AuditTrail, ServingMetrics, view_statistics, warning_kind
from mura.runtime.predictor import StudyResult, ViewResult


def _result(p: float = 0.7, part: str | None = "XR_WRIST", warnings: tuple[str, ...] = ()) -> StudyResult:
    view = ViewResult("v1", p, {"a": p}, "dicom", np.zeros((4, 4), np.uint8), warnings=warnings, probability_raw=p - 0.1)
    return StudyResult(
        p,
        {"default": "abnormal" if p >= 0.5 else "normal", "high_sensitivity": "abnormal"},
        {"default": 0.5, "high_sensitivity": 0.3},
        "default",
        {"a": p},
        [view],
        part,
        True,
        p - 0.1,
    )


def _sample(metrics: ServingMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_counts_probability_labels_and_warnings() -> None:
    metrics = ServingMetrics("web")
    metrics.answered(_result(0.7))
    metrics.answered(_result(0.2, part="XR_KNEE", warnings=("modality CT is not a radiograph: …",)))
    metrics.refused("file_type")
    assert _sample(metrics, "mura_studies_total", entry_point="web", outcome="answered", reason="") == 2
    assert _sample(metrics, "mura_studies_total", entry_point="web", outcome="refused", reason="file_type") == 1
    assert (
        _sample(
            metrics,
            "mura_study_labels_total",
            entry_point="web",
            operating_point="default",
            label="abnormal",
            body_part="XR_WRIST",
        )
        == 1
    )
    # An unknown body part is "other": no free text in a label.
    assert _sample(metrics, "mura_study_probability_count", entry_point="web", body_part="other") == 1
    assert _sample(metrics, "mura_study_probability_bucket", entry_point="web", body_part="XR_WRIST", le="0.7") == 1
    assert _sample(metrics, "mura_scope_warnings_total", entry_point="web", kind="modality") == 1
    with metrics.time("inference"):
        pass
    assert _sample(metrics, "mura_phase_seconds_count", entry_point="web", phase="inference") == 1


def test_warning_kinds() -> None:
    assert warning_kind("view1: modality CT is not a radiograph") == "modality"
    assert warning_kind("body part KNEE is outside the seven regions") == "body_part"
    assert warning_kind("something else") == "other"


def _predictor() -> SimpleNamespace:
    service = SimpleNamespace(runner=SimpleNamespace(precision="int8"), runtime="optimized")
    return SimpleNamespace(uri="models:/mura-ensemble@champion", version="3", service=service)


def test_audit_records_are_flushed_keyed_and_identify_nobody(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path / "audit")
    upload = DecodedUpload(
        np.full((8, 8), 100, np.uint8), np.zeros((30, 20), np.uint8), "dicom", "XR_WRIST", "DX", (), 12, "MONOCHROME2", "Unit X"
    )
    record = trail.record("dicom", _predictor(), _result(), [("1.2.840.99.SECRET.dcm", upload)], "1.2.840.99.SECRET", 0.42)  # type: ignore[arg-type]
    line = (tmp_path / "audit" / "audit.jsonl").read_text()  # on disk before record() returned
    assert json.loads(line) == record
    assert "SECRET" not in line and len(record["study_key"]) == 32
    assert (
        record["study_key"]
        == trail.study_key("1.2.840.99.SECRET")
        != AuditTrail(tmp_path / "other").study_key("1.2.840.99.SECRET")
    )
    assert record["model"] == {
        "uri": "models:/mura-ensemble@champion",
        "version": "3",
        "runtime": "optimized",
        "precision": "int8",
    }
    view = record["views"][0]
    assert (
        view["height"] == 30
        and view["bits_stored"] == 12
        and view["pixel_mean"] == 100.0
        and view["manufacturer_model"] == "Unit X"
    )
    assert record["labels"]["default"] == "abnormal" and record["probability_raw"] == 0.6
    trail.close()


def test_audit_rotates(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path, max_bytes=2000, backups=2)
    upload = DecodedUpload(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "png", None)
    for k in range(20):
        trail.record("web", _predictor(), _result(), [("v", upload)], f"study-{k}".encode(), 0.1)  # type: ignore[arg-type]
    trail.close()
    assert (tmp_path / "audit.jsonl.1").exists() and not (tmp_path / "audit.jsonl.3").exists()
    assert view_statistics(upload)["pixel_std"] == 0.0

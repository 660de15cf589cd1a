"""The served model's configuration: one typed, versioned object."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mura.errors import ConfigError
from mura.runtime.precision_check import PrecisionCheck, PrecisionLimits, RuntimeComparison
from mura.runtime.served_config import SCHEMA_VERSION, ServingConfig, ValidationMetrics

CONFIG = ServingConfig(
    variants=("a", "b"),
    variant_weights={"a": 1.0, "b": 3.0},
    thresholds={"default": 0.5, "high_sensitivity": 0.3},
    operating_point="high_sensitivity",
    image_size=64,
    resize="pad",
    max_pixels=1000,
    serve_batch_size=4,
    synthetic_data=True,
    validation_per_body_part={"all": ValidationMetrics("all", 10, kappa=0.4)},
)
# What register wrote before the schema had a version (mura 0.1.0, session 2).
V1 = {
    "variants": ["a", "b"],
    "weights": {"a": 1.0, "b": 3.0},
    "thresholds": {"default": 0.5, "high_sensitivity": 0.3},
    "operating_point": "default",
    "image_size": 64,
    "resize": "stretch",
    "max_pixels": 1000,
    "serve_batch_size": 8,
    "synthetic_data": True,
    "dataset_fingerprint": "f",
    "git_commit": "c",
    "metrics": {"valid": {}},
    "validation_per_body_part": {
        "all": {
            "accuracy": 0.5,
            "precision": None,
            "recall": 0.5,
            "f1": 0.5,
            "roc_auc": 0.6,
            "kappa": 0.2,
            "n": 12,
            "group": "all",
        }
    },
}


def test_round_trip(tmp_path: Path) -> None:
    CONFIG.save(tmp_path / "c.json")
    loaded = ServingConfig.load(tmp_path / "c.json")
    assert loaded == CONFIG and loaded.schema_version == SCHEMA_VERSION
    assert loaded.threshold == 0.3 and loaded.weights_in_order == [1.0, 3.0]


def test_version_1_still_loads() -> None:
    loaded = ServingConfig.from_dict(V1)
    assert loaded.variant_weights == {"a": 1.0, "b": 3.0} and loaded.validation_per_body_part["all"].n == 12
    assert loaded.validation_for("XR_WRIST") == loaded.validation_per_body_part["all"]


@pytest.mark.parametrize("precision,allowed", [("bf16", ("f32", "bf16")), ("f32", ("f32",))])
def test_version_3_keeps_its_precision_choice(precision: str, allowed: tuple[str, ...]) -> None:
    """Schema 3 had one field: bf16 allowed or not. Schema 4 lists the allowed precisions (int8 never, for v3)."""
    v3 = {**json.loads(json.dumps(CONFIG.to_dict())), "schema_version": 3, "optimized_precision": precision}
    del v3["allowed_precisions"]
    loaded = ServingConfig.from_dict(v3)
    assert loaded.allowed_precisions == allowed and loaded.schema_version == SCHEMA_VERSION


def test_a_newer_schema_fails_with_one_line() -> None:
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}; .* reads versions 1-{SCHEMA_VERSION}"):
        ServingConfig.from_dict({**json.loads(json.dumps(CONFIG.to_dict())), "schema_version": SCHEMA_VERSION + 1})


@pytest.mark.parametrize(
    "change,message",
    [
        ({"operating_point": "nope"}, "operating point 'nope'"),
        ({"variant_weights": {"a": 1.0}}, "no weight for variant 'b'"),
        ({"resize": "crop"}, "resize"),
        ({"colour": 1}, "unknown param"),
    ],
)
def test_invalid_configs_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServingConfig.from_dict({**CONFIG.to_dict(), **change})


CHECK = PrecisionCheck(
    limits=PrecisionLimits(0.01, 0.995),
    f32=RuntimeComparison(1e-7, {"default": 1.0}, studies=5, images=10, variant_max_abs_dp=(1e-7, 5e-8)),
    int8=RuntimeComparison(0.004, {"default": 1.0}, studies=5, images=10, variant_max_abs_dp=(0.004, 0.002)),
    verdicts={"bf16": "bf16: not available here", "int8": "int8 allowed: max |dp| 0.004 (limit 0.01)"},
    allowed=("f32", "int8"),
    precision="int8",
    reason="…; fastest allowed here: int8",
)


def test_the_precision_check_travels_typed_in_the_config(tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, runtime="auto", allowed_precisions=("f32", "int8"), precision_check=CHECK)
    config.save(tmp_path / "c.json")
    loaded = ServingConfig.load(tmp_path / "c.json")
    assert loaded.precision_check == CHECK and isinstance(loaded.precision_check.int8, RuntimeComparison)
    assert loaded.precision_check.comparison("int8") == CHECK.int8 and loaded.precision_check.comparison("bf16") is None


def test_a_version_6_config_reads_its_untyped_precision_check() -> None:
    """Schema 6 wrote the check as a loose mapping (no version inside), or ``{}`` without an export."""
    untyped = {**CHECK.to_dict(), "int8_variants": []}
    del untyped["schema_version"]
    v6 = {**json.loads(json.dumps(CONFIG.to_dict())), "schema_version": 6, "precision_check": untyped}
    assert ServingConfig.from_dict(v6).precision_check == CHECK
    assert ServingConfig.from_dict({**v6, "precision_check": {}}).precision_check is None


@pytest.mark.parametrize(
    "change,message",
    [
        ({"int8": {"max_abs_dp": "small", "agreement": {}}}, r"precision_check\.int8\.max_abs_dp' = 'small'"),
        ({"allowed": ["f32", "fp8"]}, r"precision_check\.allowed\[1\]"),
        ({"schema_version": 2}, "precision check schema version 2: .* upgrade mura"),
    ],
)
def test_a_wrong_precision_check_names_the_field(change: dict, message: str) -> None:
    doc = {**json.loads(json.dumps(CONFIG.to_dict())), "precision_check": {**CHECK.to_dict(), **change}}
    with pytest.raises(ConfigError, match=message):
        ServingConfig.from_dict(doc)

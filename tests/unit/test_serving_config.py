"""The served model's configuration: one typed, versioned object."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mura.errors import ConfigError
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

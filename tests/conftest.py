"""Shared fixtures: small synthetic datasets written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both synthetic datasets, small, under a folder named synthetic (read-only use)."""
    from mura.synth import write_synthetic

    out = tmp_path_factory.mktemp("raw") / "synthetic"
    write_synthetic(out, seed=7, patients=24, fracture_images=30)
    return out

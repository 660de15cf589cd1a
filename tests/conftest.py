"""Fixtures for every test: the environment (no telemetry; temporary audit trail and caches), the repository, synthetic data."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# The audit trail of the servers and CLIs the tests start goes to a temporary folder, not the user's home.
# OpenVINO's compiled models too (each test model would otherwise add a blob under ~/.cache/mura/openvino).
# Both are removed when the test session ends.
for _variable, _prefix in (("MURA_AUDIT_DIR", "mura-test-audit-"), ("MURA_OV_CACHE", "mura-test-ov-cache-")):
    if _variable not in os.environ:
        os.environ[_variable] = tempfile.mkdtemp(prefix=_prefix)
        atexit.register(shutil.rmtree, os.environ[_variable], True)

from tests.helpers import REPO  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def synthetic_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both synthetic datasets, small, under a folder named synthetic (read-only use)."""
    from mura.config import SynthParams
    from mura.data.synthetic import write_synthetic

    out = tmp_path_factory.mktemp("raw") / "synthetic"
    write_synthetic(out, seed=7, sizes=SynthParams(patients=24, fracture_images=30))
    return out

"""Helpers the tests import (constants, a PNG encoder, waiting for a server): plain functions, not fixtures."""

from __future__ import annotations

import importlib.util
import io
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
IMAGE = "localhost/mura:cpu"
SERVE_IMAGE = "localhost/mura:serve"  # docker/Dockerfile target serve: mura[serve], no TensorFlow
# Merged over params.yaml by the end-to-end tests: the seed's four variants out (too slow on 2 cores)
NO_SEED_VARIANTS: dict[str, Any] = {"densenet169_a": None, "densenet169_b": None, "resnet101_a": None, "resnet101_b": None}


def wait_http(url: str, timeout: float = 180) -> None:
    """Wait until ``url`` answers 200 (a server the test started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def load_script(path: Path, name: str) -> Any:
    """A script of the repository (not part of the package) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_pipeline_module() -> Any:
    """pipelines/kubeflow.py as a module."""
    return load_script(REPO / "pipelines" / "kubeflow.py", "kubeflow_pipeline")


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def invoke_one_study(base_url: str, timeout: float = 60) -> dict[str, Any]:
    """POST one blank 40×30 view to a model server's ``/invocations`` (MLflow's scoring contract); its first row."""
    import base64
    import json

    image = base64.b64encode(png_bytes(np.zeros((40, 30), np.uint8))).decode()
    body = json.dumps({"dataframe_records": [{"image": image, "study_id": "s1"}]}).encode()
    request = urllib.request.Request(f"{base_url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        row: dict[str, Any] = json.loads(response.read())["predictions"][0]
    return row

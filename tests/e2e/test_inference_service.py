"""The KServe InferenceService of a registered version: valid for KServe's API models, and its command serves.

No cluster is reachable here. What can be checked is checked: the manifest against KServe's own
Python SDK models (generated from KServe's OpenAPI definitions; with the Kubernetes client's models
for the core types) in a venv of their own (``kserve`` pins pandas < 3, ours is 3), and the
predictor's container command run under podman in the serving image on a registered model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mura.deploy.kserve import PORT, KServeSettings, container_command, inference_service, write_manifest
from mura.deploy.processes import free_port
from tests.helpers import invoke_one_study, wait_http

pytestmark = pytest.mark.slow

KSERVE = ("kserve==0.21.0", "kubernetes==37.0.1")  # the SDK the manifests are checked against
CHECKER = Path(__file__).with_name("kserve_schema_check.py")


@pytest.fixture(scope="module")
def kserve_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("kserve-sdk") / "venv"
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        cmd = [str(uv), "pip", "install", "-q", "--python", str(venv / "bin/python"), *KSERVE]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin/python"), "-m", "pip", "install", "-q", *KSERVE]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin/python"


def _errors(python: Path, manifest: dict[str, Any], folder: Path) -> list[str]:
    path = folder / "isvc.yaml"
    write_manifest(manifest, path)
    done = subprocess.run([str(python), str(CHECKER), str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    errors: list[str] = json.loads(done.stdout)
    return errors


def test_the_manifest_fits_kserves_api_models(kserve_python: Path, tmp_path: Path) -> None:
    settings = KServeSettings(image="reg.example/mura:serve", namespace="radiology", tracking_secret="mura-team")
    assert _errors(kserve_python, inference_service("mura-ensemble", 7, settings), tmp_path) == []
    no_secret = KServeSettings(tracking_secret="", name="mura-staging", min_replicas=0)
    assert _errors(kserve_python, inference_service("mura-ensemble", 7, no_secret), tmp_path) == []


def test_the_check_refuses_what_kserve_would(kserve_python: Path, tmp_path: Path) -> None:
    """The checker is not a rubber stamp: a misspelt field, a wrong type and a missing required field are each named."""
    manifest = inference_service("mura-ensemble", 7, KServeSettings())
    predictor = manifest["spec"]["predictor"]
    predictor["minReplica"] = 1
    container = predictor["containers"][0]
    container["readinessProbe"]["httpGet"]["pth"] = "/ping"
    container["ports"] = "8080"
    del container["name"]
    errors = "\n".join(_errors(kserve_python, manifest, tmp_path))
    assert "spec.predictor.minReplica: not a field of V1beta1PredictorSpec" in errors
    assert "readinessProbe.httpGet.pth: not a field of V1HTTPGetAction" in errors
    assert "containers[0].ports: expected a list" in errors
    assert "V1Container" in errors and "name" in errors


def test_the_predictor_command_serves_in_the_serving_image(serve_image: str, registered: dict[str, Any]) -> None:
    """The manifest's container command, run by podman in the serving image, answers on the manifest's port."""
    manifest = inference_service("mura-ensemble", 1, KServeSettings(image=serve_image))
    ws, port = registered["ws"], free_port()
    name = f"mura-kserve-{port}"
    run = ["podman", "run", "-d", "--rm", "--name", name, "--user", f"{os.getuid()}:{os.getgid()}"]
    run += ["-p", f"127.0.0.1:{port}:{PORT}", "-v", f"{ws}:{ws}", "-e", f"MLFLOW_TRACKING_URI={registered['uri']}"]
    command = [*run, "--entrypoint", "", serve_image, *container_command(manifest)]
    started = subprocess.run(command, capture_output=True, text=True)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        probe = manifest["spec"]["predictor"]["containers"][0]["readinessProbe"]["httpGet"]
        wait_http(f"http://127.0.0.1:{port}{probe['path']}", timeout=240)
        row = invoke_one_study(f"http://127.0.0.1:{port}")
        assert 0.0 <= row["probability"] <= 1.0 and row["study_label"] in ("normal", "abnormal")
    finally:
        subprocess.run(["podman", "stop", "-t", "5", name], capture_output=True, timeout=120)

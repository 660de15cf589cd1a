"""``mura[serve]`` alone: the served model, the model server and the DICOM node run without TensorFlow, Keras or DVC.

A venv with only the serve extra (what the serving image installs) is made once per run
(``uv pip install -e '.[serve]'``: ~20 s from uv's cache). Every command below is that venv's
own ``mura``, on the model the ``registered`` fixture registered with the optimized runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mura.data.dicom_phantoms import write_phantom_study
from mura.deploy.orthanc import Orthanc
from mura.deploy.processes import free_port, wait_tcp
from tests.e2e.test_dicom_node import SIDE, _count, _storescu, _wait_results
from tests.helpers import invoke_one_study, png_bytes, wait_http

pytestmark = pytest.mark.slow

TRAINING_STACK = ("tensorflow", "keras", "dvc", "nncf", "sklearn", "flask")
MODEL = "models:/mura-ensemble/1"  # registered with register.runtime auto: an OpenVINO export beside the .keras files


@pytest.fixture(scope="module")
def serve_venv(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("serve-install") / "venv"
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():  # make install puts uv in the venv
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        cmd = [str(uv), "pip", "install", "-q", "--compile-bytecode", "--python", str(venv / "bin/python")]
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        cmd = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    done = subprocess.run([*cmd, "-e", f"{repo_root}[serve]"], capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _env(registered: dict[str, Any], venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "VIRTUAL_ENV", "PYTHONPATH"))}
    return env | {"MLFLOW_TRACKING_URI": registered["uri"], "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}


def test_the_serve_install_has_no_training_stack(serve_venv: Path) -> None:
    probe = "import importlib.util as u, json, sys; print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    done = subprocess.run([str(serve_venv / "bin/python"), "-c", probe, *TRAINING_STACK], capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr
    for module in ("openvino", "fastapi", "pydicom", "pynetdicom", "highdicom", "mlflow"):
        found = subprocess.run([str(serve_venv / "bin/python"), "-c", f"import {module}"], capture_output=True, text=True)
        assert found.returncode == 0, found.stderr[-2000:]


def test_mura_predict_runs_from_the_serve_install(serve_venv: Path, registered: dict[str, Any], tmp_path: Path) -> None:
    image = tmp_path / "view.png"
    image.write_bytes(png_bytes(np.full((40, 30), 90, np.uint8)))
    done = subprocess.run(
        [str(serve_venv / "bin/mura"), "predict", "--model", MODEL, "--json", str(image)],
        env=_env(registered, serve_venv),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    assert 0.0 <= answer["probability"] <= 1.0 and answer["synthetic_data"] is True, answer


def test_mura_serve_model_answers_from_the_serve_install(serve_venv: Path, registered: dict[str, Any], tmp_path: Path) -> None:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(serve_venv / "bin/mura"), "serve-model", "-m", MODEL, "-H", "127.0.0.1", "-p", str(port)],
        env=_env(registered, serve_venv),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=240)
        row = invoke_one_study(f"http://127.0.0.1:{port}")
        assert 0.0 <= row["probability"] <= 1.0 and row["study_label"] in ("normal", "abnormal")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    assert "No module named" not in (tmp_path / "server.log").read_text()


@pytest.fixture
def pacs_and_node_port(tmp_path: Path) -> Iterator[tuple[Orthanc, int]]:
    node_port = free_port()
    with Orthanc(tmp_path / "orthanc", {"mura": ("MURA", node_port)}) as server:
        yield server, node_port


def test_mura_dicom_node_answers_a_study_from_the_serve_install(
    serve_venv: Path, registered: dict[str, Any], pacs_and_node_port: tuple[Orthanc, int], tmp_path: Path
) -> None:
    if not shutil.which("storescu"):
        pytest.fail("DCMTK is missing: scripts/ensure-system.sh installs it (make test does)")
    pacs, port = pacs_and_node_port
    cmd = [str(serve_venv / "bin/mura"), "dicom-node", "--model", MODEL, "--port", str(port), "--metrics-port", "0"]
    cmd += ["--spool", str(tmp_path / "spool"), "--destination", pacs.address, "--idle-seconds", "1"]
    with (tmp_path / "node.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=_env(registered, serve_venv), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_tcp(port, 180, proc, "mura dicom-node")
            study = write_phantom_study(tmp_path / "study", 2, "WRIST", True, seed=3, size=SIDE)
            assert _storescu(port, list(study.files)).returncode == 0
            results = _wait_results(pacs, study.study_uid, _count(2))  # the SR, a heatmap and a box state per view
            assert len(results) == _count(2)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

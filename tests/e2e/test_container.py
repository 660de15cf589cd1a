"""The image (docker/Dockerfile, built with podman): stages, model server and Kubeflow steps run in it.

The image is built once per run (layers cached by podman: seconds when pyproject.toml and the
code are unchanged, ~4 minutes from nothing) FROM the local Debian base that
docker/make-base.sh makes when no registry is reachable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mura.config import SynthParams
from mura.data.synthetic import write_synthetic
from mura.deploy.processes import free_port
from mura.workspace import create_workspace
from tests.helpers import IMAGE, NO_SEED_VARIANTS, invoke_one_study, load_pipeline_module, wait_http

pytestmark = pytest.mark.slow

UID = 4321  # not the invoking user's: proves files on the mount belong to whoever runs the container
OVERRIDE = {
    "data": {"image_size": 32},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001, "pretrained": "none", "workers": 1},
    "models": {
        **NO_SEED_VARIANTS,
        "tiny_a": {"arch": "simple_cnn", "dense_units": 8, "dropout": 0.2},
    },
}
DATA_OUTPUTS = ("data/interim/images.csv", "data/interim/pixels.npy", "data/processed/split.csv", "reports/class_weights.json")


def _host_env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", MURA_GIT_COMMIT="test")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in [k for k in env if k.startswith(("MLFLOW_TRACKING", "AWS_"))]:
        env.pop(key)
    return env


def _podman(*args: str, timeout: int = 900, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


def test_image_runs_as_a_non_root_user_with_no_data_or_secrets(image: str) -> None:
    out = _podman(
        "run", "--rm", image, "sh", "-c", "id -u; pwd; mura --help >/dev/null && echo ok; ls /opt/mura | tr '\\n' ' '; echo; env"
    ).stdout
    lines = out.splitlines()
    assert lines[0] == "1000" and lines[1] == "/work" and lines[2] == "ok"
    assert {"dvc.yaml", "params.yaml", "stages", "src"} <= set(lines[3].split())  # the pipeline, for Kubeflow steps
    assert "PASSWORD" not in out and "AWS_SECRET" not in out
    inspect = json.loads(_podman("image", "inspect", image).stdout)[0]
    labels = inspect["Config"]["Labels"]
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0" and "org.opencontainers.image.source" in labels
    listing = _podman(
        "run", "--rm", image, "sh", "-c", "ls /opt/venv/lib/python3.11/site-packages | grep -ci '^tensorflow'"
    ).stdout
    assert int(listing.strip()) >= 1


def _workspace(repo_root: Path, dest: Path) -> Path:
    ws = create_workspace(repo_root, dest, OVERRIDE)
    write_synthetic(ws / "data/raw/synthetic", seed=9, sizes=SynthParams(patients=20, fracture_images=0))
    return ws


def test_stages_in_the_container_match_the_host(image: str, repo_root: Path, tmp_path: Path) -> None:
    inside = _workspace(repo_root, tmp_path / "inside")
    host = _workspace(repo_root, tmp_path / "host")
    for path in [inside, *inside.rglob("*")]:
        os.chown(path, UID, UID)
    proc = _podman(
        "run", "--rm", "--user", f"{UID}:{UID}", "-e", "MURA_GIT_COMMIT=test", "-v", f"{inside}:/work", image,
        "dvc", "repro", "train@tiny_a",
    )  # fmt: skip
    assert "Running stage 'train@tiny_a'" in proc.stdout, proc.stdout[-3000:]
    run = subprocess.run(["dvc", "repro", "train@tiny_a"], cwd=host, env=_host_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in DATA_OUTPUTS:
        assert (inside / name).read_bytes() == (host / name).read_bytes(), name
    ours, theirs = (json.loads((ws / "reports/train/tiny_a/metrics.json").read_text()) for ws in (inside, host))
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert value == pytest.approx(theirs[key], abs=1e-6), key
    # Everything the container wrote on the mount belongs to the user who ran it.
    written = [p for p in inside.rglob("*") if "data/raw" not in str(p)]
    assert written and all(p.stat().st_uid == UID for p in written)


def test_the_serving_image_has_no_training_stack(serve_image: str) -> None:
    """docker/Dockerfile's target serve installs mura[serve]: no TensorFlow, Keras, DVC or NNCF inside."""
    probe = "import importlib.util as u; print(','.join(m for m in ('tensorflow', 'keras', 'dvc', 'nncf') if u.find_spec(m)))"
    done = _podman("run", "--rm", serve_image, "python", "-c", probe)
    assert done.stdout.strip() == "", done.stdout
    assert _podman("run", "--rm", serve_image, "mura", "dicom-node", "--help").stdout.startswith("usage: mura dicom-node")


def test_mlflow_models_serve_from_the_serving_image(serve_image: str, registered: dict[str, Any]) -> None:
    """The registered version (optimized runtime) served by MLflow's own CLI in the image that has only mura[serve]."""
    image = serve_image
    ws = registered["ws"]
    port = free_port()
    name = f"mura-serve-{port}"
    # The tracking store is mounted at its own path, so the artifact locations it records resolve inside too.
    _podman(
        "run", "-d", "--rm", "--name", name, "--user", f"{os.getuid()}:{os.getgid()}",
        "-p", f"127.0.0.1:{port}:5000", "-v", f"{ws}:{ws}",
        "-e", f"MLFLOW_TRACKING_URI={registered['uri']}", image,
        "mlflow", "models", "serve", "-m", "models:/mura-ensemble/1", "--env-manager", "local", "-h", "0.0.0.0", "-p", "5000",
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=240)
        row = invoke_one_study(f"http://127.0.0.1:{port}")
        assert 0.0 <= row["probability"] <= 1.0 and row["study_label"] in ("normal", "abnormal")
        ports = json.loads(_podman("inspect", name).stdout)[0]["HostConfig"]["PortBindings"]
        assert all(b["HostIp"] == "127.0.0.1" for bindings in ports.values() for b in bindings)
    finally:
        _podman("stop", "-t", "5", name, ok=False)


def _run_container_keeping_its_exit_code(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **kwargs: Any
) -> int:
    """kfp.local's container launcher, without auto-remove.

    kfp.local starts each step with ``auto_remove=True``; on podman's Docker-compatible API the
    inspect that follows races the removal (HTTP 500 "no such container" where Docker answers
    404), and a container already removed is counted as exit code 0 — a failing step would
    pass. This runs the same container, waits, prints its logs and returns its real exit code.
    """
    container = client.containers.run(image=image, command=command, detach=True, volumes=volumes, **kwargs)
    try:
        code = int(container.wait()["StatusCode"])
        print(container.logs().decode(errors="replace"), end="")
    finally:
        container.remove(force=True)
    # kfp.local deletes its workspace when the pipeline ends: keep what this step left in it.
    (workspace,) = [host for host, spec in volumes.items() if spec["bind"] == "/kfp-workspace"]
    shutil.copytree(workspace, f"{workspace}-seen", dirs_exist_ok=True)
    return code


def test_kfp_local_runs_the_data_stages_in_the_image(
    docker_api: str, repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml
    from kfp import local

    kubeflow = load_pipeline_module()
    settings = kubeflow.ClusterSettings(image=IMAGE, only=("ingest", "split", "class_weights"))
    pipeline = kubeflow.build_pipeline(settings)
    monkeypatch.setenv("DOCKER_HOST", docker_api)
    import kfp.local.docker_task_handler

    monkeypatch.setattr(kfp.local.docker_task_handler, "run_docker_container", _run_container_keeping_its_exit_code)
    workspace = tmp_path / "kfp-workspace"
    workspace.mkdir()
    root = tmp_path / "kfp-root"
    root.mkdir()
    uid = f"{os.getuid()}:{os.getgid()}"
    local.init(runner=local.DockerRunner(user=uid), pipeline_root=str(root), workspace_root=str(workspace))
    override = yaml.safe_dump({k: v for k, v in OVERRIDE.items() if k != "train"})
    pipeline(prepare_command="mura synth data/raw/synthetic --patients 20 --fracture-images 0 --seed 9", params_override=override)
    # kfp.local reports a failed container as SUCCESS (it auto-removes containers): check what the steps wrote.
    run = tmp_path / "kfp-workspace-seen" / "run"
    host = _workspace(repo_root, tmp_path / "host")
    proc = subprocess.run(
        ["dvc", "repro", "class_weights"], cwd=host, env=_host_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in DATA_OUTPUTS:
        assert (run / name).exists(), f"{name} was not written by the Kubeflow step"
        assert (run / name).read_bytes() == (host / name).read_bytes(), name

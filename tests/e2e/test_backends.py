"""The train stage under Keras's TensorFlow and JAX backends on CPU: both train, and each loads the other's files.

The project's GPU machines have JAX and no TensorFlow (nor MLflow or DVC): the same
``stages/train.py`` runs there with ``KERAS_BACKEND=jax`` and ``--no-tracking``. Here a tiny
variant is trained once per backend from the same data (the data stages through DVC, once), and
the ``.keras`` file each writes is loaded under the other backend and predicts what it predicts
under its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mura.config import SynthParams
from mura.data.synthetic import write_synthetic
from mura.workspace import create_workspace
from tests.helpers import NO_SEED_VARIANTS

pytestmark = pytest.mark.slow

BACKENDS = ("tensorflow", "jax")
OVERRIDE = {
    "data": {"image_size": 32},
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.001, "pretrained": "none", "workers": 1},
    "models": {**NO_SEED_VARIANTS, "tiny_a": {"arch": "simple_cnn", "dense_units": 8, "dropout": 0.2}},
}
PREDICT = """
import json, sys
import keras, numpy as np
import mura.modeling.layers  # registers the project's layers, as every loader of a variant does
model = keras.saving.load_model(sys.argv[1], compile=False)
pixels = np.load(sys.argv[2])[..., None]
print(json.dumps({"backend": keras.backend.backend(), "p": np.asarray(model.predict_on_batch(pixels)).ravel().tolist()}))
"""


def _env(backend: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
    env |= {"KERAS_BACKEND": backend, "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"  # nothing listens: a stage that tried to log would fail
    return env


@pytest.fixture(scope="module")
def trained(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    ws = create_workspace(repo_root, tmp_path_factory.mktemp("backends") / "ws", OVERRIDE)
    write_synthetic(ws / "data/raw/synthetic", seed=9, sizes=SynthParams(patients=30, fracture_images=0))
    done = subprocess.run(["dvc", "repro", "class_weights"], cwd=ws, env=_env("tensorflow"), capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    out = {}
    for backend in BACKENDS:
        cmd = [sys.executable, "stages/train.py", "--model", "tiny_a", "--no-tracking"]
        cmd += ["--models-dir", f"models-{backend}", "--reports-dir", f"reports/train-{backend}"]
        run = subprocess.run(cmd, cwd=ws, env=_env(backend), capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
        assert "without tracking (--no-tracking)" in run.stderr  # one clear warning
        out[backend] = ws / f"models-{backend}" / "tiny_a.keras"
        metrics = json.loads((ws / f"reports/train-{backend}/tiny_a/metrics.json").read_text())
        assert metrics["synthetic_data"] is True and metrics["epochs_run"] == 2 and "val_auc" in metrics
    pixels = np.load(ws / "data/interim/pixels.npy")[:6]
    np.save(ws / "probe.npy", pixels)
    out["probe"] = ws / "probe.npy"
    return out


def _predict(model: Path, probe: Path, backend: str) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, "-c", PREDICT, str(model), str(probe)], env=_env(backend), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["backend"] == backend
    return np.asarray(answer["p"])


@pytest.mark.parametrize("trained_on", BACKENDS)
def test_each_backends_model_loads_and_predicts_alike_under_the_other(trained: dict[str, Path], trained_on: str) -> None:
    other = next(b for b in BACKENDS if b != trained_on)
    own = _predict(trained[trained_on], trained["probe"], trained_on)
    across = _predict(trained[trained_on], trained["probe"], other)
    assert own.shape == (6,) and np.all((own >= 0) & (own <= 1))
    np.testing.assert_allclose(across, own, atol=1e-5)


def _pins(*names: str) -> list[str]:
    """pyproject.toml's pins of these distributions (one list of pins: the test installs what users would)."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    every = [r for extra in project["optional-dependencies"].values() for r in extra]
    return [next(r for r in every if r.startswith(f"{name}==")) for name in names]


def test_the_train_stage_runs_where_only_keras_on_jax_is(repo_root: Path, tmp_path: Path) -> None:
    """A GPU node's environment: the base install plus Keras and JAX; no TensorFlow, MLflow or DVC.

    bench/gpu_check.sh's path there: a workspace without DVC, the stage scripts in dvc.yaml's order,
    ``train`` with ``--no-tracking``.
    """
    venv = tmp_path / "venv"
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    installer = [str(uv), "pip", "install", "-q", "--python", str(venv / "bin/python")] if uv.is_file() else None
    if installer is None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installer = [str(venv / "bin/python"), "-m", "pip", "install", "-q"]
    extra = _pins("keras", "jax", "jaxlib", "matplotlib")
    done = subprocess.run([*installer, "-e", str(repo_root), *extra], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    python = str(venv / "bin/python")
    probe = "import importlib.util as u; print([m for m in ('tensorflow', 'mlflow', 'dvc') if u.find_spec(m)])"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip() == "[]"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "VIRTUAL_ENV"))} | {"KERAS_BACKEND": "jax"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    override = tmp_path / "override.yaml"
    override.write_text(json.dumps(OVERRIDE | {"synth": {"patients": 30, "fracture_images": 0}}))
    ws = tmp_path / "ws"
    made = subprocess.run(
        [python, "-m", "mura.cli", "workspace", str(ws), "--override", str(override), "--synth"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert made.returncode == 0 and "DVC is not installed" in made.stderr, made.stderr[-3000:]
    for stage in ("ingest", "split", "class_weights"):
        script = [python, f"stages/{stage}.py", "--params", "params.yaml"]
        run = subprocess.run(script, cwd=ws, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-3000:]
    train = [python, "stages/train.py", "--params", "params.yaml", "--model", "tiny_a", "--no-tracking"]
    run = subprocess.run(train, cwd=ws, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("without tracking (--no-tracking)") == 1
    metrics = json.loads((ws / "reports/train/tiny_a/metrics.json").read_text())
    assert (ws / "models/tiny_a.keras").is_file() and metrics["epochs_run"] == 2

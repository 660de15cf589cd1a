"""End-to-end: the DVC pipeline in a temporary workspace on small synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura.config import SynthParams
from mura.data.synthetic import write_synthetic
from mura.workspace import create_workspace

pytestmark = pytest.mark.slow

OVERRIDE = {"data": {"image_size": 32}, "ingest": {"workers": 2}}
DATA_OUTPUTS = [
    "data/interim/images.csv",
    "data/interim/pixels.npy",
    "data/processed/split.csv",
    "reports/ingest/summary.json",
    "reports/ingest/quarantine.csv",
    "reports/ingest/duplicates.csv",
    "reports/split.json",
    "reports/class_weights.json",
]


def _env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc(ws: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=ws, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _workspace(repo: Path, dest: Path) -> Path:
    ws = create_workspace(repo, dest, OVERRIDE)
    write_synthetic(ws / "data/raw/synthetic", seed=11, sizes=SynthParams(patients=20, fracture_images=24))
    return ws


@pytest.fixture(scope="module")
def workspace(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = _workspace(repo_root, tmp_path_factory.mktemp("ws") / "pipeline")
    _dvc(ws, "repro", "class_weights")
    return ws


def test_data_stages_outputs(workspace: Path) -> None:
    images = pd.read_csv(workspace / "data/interim/images.csv")
    pixels = np.load(workspace / "data/interim/pixels.npy", mmap_mode="r")
    assert pixels.shape == (len(images), 32, 32)
    split = pd.read_csv(workspace / "data/processed/split.csv")
    assert split["image_id"].tolist() == images["image_id"].tolist()
    assert set(split["split"]) == {"train", "valid", "test"}
    weights = json.loads((workspace / "reports/class_weights.json").read_text())
    assert set(weights) == {"0", "1"} and sum(weights.values()) == pytest.approx(1.0)
    summary = json.loads((workspace / "reports/ingest/summary.json").read_text())
    assert summary["listed"] == summary["ingested"] + summary["quarantined"] + summary["duplicates_dropped"]


def test_second_repro_does_nothing(workspace: Path) -> None:
    out = _dvc(workspace, "repro", "class_weights")
    assert "Running stage" not in out
    assert "up to date" in _dvc(workspace, "status", "class_weights").lower()


def test_data_stages_are_byte_reproducible(workspace: Path, repo_root: Path, tmp_path: Path) -> None:
    again = _workspace(repo_root, tmp_path / "again")
    _dvc(again, "repro", "class_weights")
    for rel in DATA_OUTPUTS:
        assert (again / rel).read_bytes() == (workspace / rel).read_bytes(), rel


def test_bad_dataset_is_one_line_error(repo_root: Path, tmp_path: Path) -> None:
    ws = create_workspace(repo_root, tmp_path / "bad", OVERRIDE)
    mura = ws / "data/raw/synthetic/MURA-v1.1"
    mura.mkdir(parents=True)
    (mura / "train_labeled_studies.csv").write_text("")
    proc = subprocess.run([sys.executable, "stages/ingest.py"], cwd=ws, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "train_labeled_studies.csv is empty" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_datasets_outside_the_workspace(repo_root: Path, tmp_path: Path) -> None:
    """params.yaml may point at datasets anywhere: DVC tracks the configured folders, not data/raw."""
    outside = tmp_path / "datasets"
    write_synthetic(outside, seed=11, sizes=SynthParams(patients=20, fracture_images=24))
    dirs = {"mura_dir": str(outside / "MURA-v1.1"), "fracture_dir": str(outside / "Bone_Fracture_Binary_Classification")}
    ws = create_workspace(repo_root, tmp_path / "ws", {**OVERRIDE, "data": {**OVERRIDE["data"], **dirs}})
    _dvc(ws, "repro", "split")
    images = pd.read_csv(ws / "data/interim/images.csv")
    assert set(images["dataset"]) == {"mura", "fracture"}
    assert "up to date" in _dvc(ws, "status", "split").lower()
    # A new image in the configured folder makes ingest stale.
    (outside / "MURA-v1.1" / "extra.txt").write_text("not listed, but part of the folder")
    assert "ingest" in _dvc(ws, "status", "ingest")


def test_missing_configured_folder_is_one_line_naming_the_param(repo_root: Path, tmp_path: Path) -> None:
    ws = create_workspace(repo_root, tmp_path / "ws", {**OVERRIDE, "data": {**OVERRIDE["data"], "mura_dir": "/nowhere/MURA"}})
    proc = subprocess.run([sys.executable, "stages/ingest.py"], cwd=ws, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: data.mura_dir='/nowhere/MURA': no such folder")
    dvc = subprocess.run(["dvc", "repro", "ingest"], cwd=ws, env=_env(), capture_output=True, text=True, timeout=300)
    assert dvc.returncode != 0 and "/nowhere/MURA" in dvc.stdout + dvc.stderr

"""Fixtures of the end-to-end tests: a registered model in a temporary store, the container image, podman's Docker API."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mura.config import merge_params, parse_params
from mura.modeling.operating_points import OperatingPoints
from tests.helpers import IMAGE, NO_SEED_VARIANTS, SERVE_IMAGE, SIZE


def register_variants(
    repo_root: Path, ws: Path, models: dict[str, Any], register: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Register ``models`` (variant → Keras model, ``SIZE``-px input) as ``mura-ensemble`` in a store under ``ws``.

    Writes what the ``register`` stage reads (models, thresholds, metrics, ten validation images in
    five studies with the Keras predictions as the reference of the precision check) and runs it once.
    Returns the stage's ``reports/register.json`` record, the store's ``uri`` and what a second
    registration needs (``params``, ``inputs``).
    """
    from mura.modeling.inference import VariantRunner
    from mura.packaging.register import RegisterPaths, run_register

    names = list(models)
    doc = merge_params(
        yaml.safe_load((repo_root / "params.yaml").read_text()),
        {
            "data": {"image_size": SIZE},
            "models": {**NO_SEED_VARIANTS, **{name: {"arch": "simple_cnn"} for name in names}},
            "register": {"max_pixels": 1_000_000, **(register or {})},
        },
    )
    params = parse_params(doc)
    (ws / "models").mkdir()
    for name, model in models.items():
        model.save(ws / f"models/{name}.keras")
    (ws / "reports").mkdir()
    OperatingPoints(thresholds={"default": 0.5, "high_sensitivity": 0.3}, variant_weights={n: 1.0 for n in names}).save(
        ws / "reports/thresholds.json"
    )
    (ws / "reports/metrics.json").write_text(json.dumps({"valid": {"ensemble": {"study": {"default": {"kappa": 0.25}}}}}))
    # Ten validation images in five studies: the precision check of the optimized runtime runs on them;
    # eight test images in eight studies of eight patients: a later version is compared with the champion on them.
    n = 20
    ids = [f"i{k}" for k in range(n)]
    studies = [f"t{k}" for k in range(2)] + [f"s{k // 2}" for k in range(10)] + [f"x{k}" for k in range(8)]
    pd.DataFrame(
        {
            "image_id": ids,
            "synthetic": [True] * n,
            "study_id": studies,
            "patient_id": [f"p-{study}" for study in studies],
            "label": [0, 1] + [(k // 2) % 2 for k in range(10)] + [k % 2 for k in range(8)],
        }
    ).to_csv(ws / "images.csv", index=False)
    split = ["train", "train"] + ["valid"] * 10 + ["test"] * 8
    pd.DataFrame({"image_id": ids, "split": split}).to_csv(ws / "split.csv", index=False)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, SIZE, SIZE)).astype(np.uint8)
    np.save(ws / "pixels.npy", pixels)
    reference = VariantRunner.from_paths({n: ws / f"models/{n}.keras" for n in names}).predict(pixels[2:12])
    (ws / "reports/predictions").mkdir()
    pd.DataFrame(
        {
            "image_id": ids[2:12],
            "study_id": [f"s{k // 2}" for k in range(10)],
            "label": [(k // 2) % 2 for k in range(10)],
            **{f"p_{n}": reference[:, i] for i, n in enumerate(names)},
        }
    ).to_csv(ws / "reports/predictions/valid.csv", index=False)
    _write_validation_table(ws, names)
    # The localize stage's record without annotated boxes (no measured figures). Its levels are the lowest there
    # are: a random model's Grad-CAM can be 0 everywhere, and the tests need a box to draw whenever a study passes.
    levels = {"high_sensitivity": 0.0, "high_specificity": 0.0}
    record = {"levels": levels, "measured": False, "chosen_on": dict.fromkeys(levels, "default"), "test": {}}
    (ws / "reports/localization.json").write_text(json.dumps(record))
    inputs = RegisterPaths(
        models_dir=ws / "models",
        thresholds=ws / "reports/thresholds.json",
        metrics=ws / "reports/metrics.json",
        images=ws / "images.csv",
        split=ws / "split.csv",
        pixels=ws / "pixels.npy",
        predictions=ws / "reports/predictions",
        per_body_part=ws / "reports/per_body_part.csv",  # the valid split's only: no test-split figures in this fixture
        figures=(),
        model_card=None,
        localization=ws / "reports/localization.json",
    )
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:  # the stage's working folder and store, undone after
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(ws)
        result = run_register(names, params.register, params.data.image_size, params.data.resize, inputs)
    return {"ws": ws, "uri": uri, "first": result, "params": params, "inputs": inputs}


def _write_validation_table(ws: Path, names: list[str]) -> None:
    """The evaluation table of the ten validation images (what the served validation figures and floor come from)."""
    from mura.evaluation.evaluate import evaluation_table

    valid = pd.read_csv(ws / "reports/predictions/valid.csv")
    frame = valid.merge(pd.read_csv(ws / "images.csv")[["image_id", "patient_id"]], on="image_id")
    ensemble = frame[[f"p_{n}" for n in names]].mean(axis=1)
    frame = frame.assign(split="valid", dataset="mura", body_part="XR_WRIST", p_ensemble=ensemble)
    table = evaluation_table(frame, [*names, "ensemble"], {"default": 0.5, "high_sensitivity": 0.3}, n_resamples=0, seed=0)
    table.to_csv(ws / "reports/per_body_part.csv", index=False)


def tiny_variants() -> dict[str, Any]:
    """Two random (untrained) ``simple_cnn`` variants, ``tiny_a`` and ``tiny_b``, at ``SIZE`` px, seeded."""
    import keras

    from mura.config import AugmentParams, ModelSpec
    from mura.modeling.models import build_model

    models = {}
    for k, name in enumerate(("tiny_a", "tiny_b")):
        keras.utils.set_random_seed(k)
        models[name] = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), SIZE, "none", AugmentParams(), seed=k)
    return models


@pytest.fixture(scope="session")
def registered(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two random simple_cnn variants registered as mura-ensemble v1 and v2 in a temp store."""
    from mura.config import PromotionParams
    from mura.packaging.register import run_register

    models = tiny_variants()
    done = register_variants(repo_root, tmp_path_factory.mktemp("serve"), models)
    ws, params = done["ws"], done["params"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", done["uri"])
        patch.chdir(ws)
        # A second version must not take the champion alias: compared with v1 on the same test studies, it
        # must beat it by a whole kappa (margin -1: impossible). Its bf16 limit is impossible too
        # (|dp| <= 0), so the guard must fall back to float32.
        (ws / "reports/metrics.json").write_text(json.dumps({"valid": {"ensemble": {"study": {"default": {"kappa": 0.1}}}}}))
        unbeatable = PromotionParams(margin=-1.0, bootstrap=200)
        strict = dataclasses.replace(params.register, reduced_max_abs_dp=0.0, promotion=unbeatable)
        second = run_register(list(models), strict, params.data.image_size, params.data.resize, done["inputs"])
    return {"ws": ws, "uri": done["uri"], "first": done["first"], "second": second}


def _build_image(repo_root: Path, target: str, tag: str) -> str:
    if not shutil.which("podman"):
        pytest.fail("podman is missing: scripts/ensure-system.sh installs it (make test does)")
    for script in ("docker/setup-podman.sh", "docker/make-base.sh"):
        proc = subprocess.run([str(repo_root / script)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    started = time.monotonic()
    build = subprocess.run(
        ["podman", "build", "-f", "docker/Dockerfile", "--target", target, "-t", tag, "."],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-2000:]
    print(f"image {tag} built in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture(scope="session")
def image(repo_root: Path) -> str:
    """The pipeline image (target cpu): every stage, the servers."""
    return _build_image(repo_root, "cpu", IMAGE)


@pytest.fixture(scope="session")
def serve_image(repo_root: Path) -> str:
    """The serving image (target serve): mura[serve] only."""
    return _build_image(repo_root, "serve", SERVE_IMAGE)


@pytest.fixture(scope="session")
def docker_api(image: str, tmp_path_factory: pytest.TempPathFactory):
    """podman's Docker-compatible API on a socket of ours (what kfp.local's Docker runner talks to)."""
    sock = tmp_path_factory.mktemp("podman") / "docker.sock"
    proc = subprocess.Popen(["podman", "system", "service", "--time=0", f"unix://{sock}"], start_new_session=True)
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sock.exists(), "podman system service did not create its socket"
    yield f"unix://{sock}"
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)

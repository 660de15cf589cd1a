from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from mura.config import AugmentParams, ModelSpec, TrainParams
from mura.data.imaging import resize_gray
from mura.data.sources import BODY_PARTS
from mura.data.synthetic import render_phantom
from mura.errors import DataError
from mura.modeling.spec import VariantSpec
from mura.modeling.train import TrainingData, bounded_subset, compile_model, fit_variant, resolve_precision, select_rows


def _listing(labels: list[int], splits: list[str], datasets: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"i{k}" for k in range(len(labels))]
    images = pd.DataFrame({"image_id": ids, "dataset": datasets or ["mura"] * len(ids), "label": labels})
    return images, pd.DataFrame({"image_id": ids, "split": splits})


def test_select_rows() -> None:
    images, split = _listing(
        [0, 1, 0, 1, 1, 0],
        ["train", "train", "valid", "valid", "test", "train"],
        ["mura", "mura", "mura", "mura", "mura", "fracture"],
    )
    data = select_rows(images, split, ("mura",), 6)
    assert data.train_rows.tolist() == [0, 1] and data.valid_rows.tolist() == [2, 3]
    both = select_rows(images, split, ("mura", "fracture"), 6)
    assert both.train_rows.tolist() == [0, 1, 5]


@pytest.mark.parametrize(
    "labels,splits,rows,message",
    [
        ([0, 1], ["train", "valid"], 3, "pixels.npy has 3 rows"),
        ([0, 1, 0, 1], ["valid", "valid", "test", "test"], 4, "train split is empty"),
        ([0, 0, 0, 1], ["train", "train", "valid", "valid"], 4, "train split has only one class"),
    ],
)
def test_select_rows_errors(labels: list[int], splits: list[str], rows: int, message: str) -> None:
    images, split = _listing(labels, splits)
    with pytest.raises(DataError, match=message):
        select_rows(images, split, ("mura",), rows)


def test_a_variants_own_learning_rate_replaces_the_shared_one(repo_root: Path) -> None:
    import yaml

    from mura.config import parse_params

    doc = yaml.safe_load((repo_root / "params.yaml").read_text())
    doc["models"]["resnet101_a"]["learning_rate"] = 0.002
    params = parse_params(doc)
    assert VariantSpec.from_params(params, "resnet101_a").train.learning_rate == 0.002
    assert VariantSpec.from_params(params, "resnet101_b").train.learning_rate == doc["train"]["learning_rate"]
    assert VariantSpec.from_params(params, "resnet101_b").model.learning_rate is None


def test_precision_auto_is_float32_on_cpu() -> None:
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


def test_compile_builds_optimizer_so_the_training_step_is_traced_once() -> None:
    import keras

    from mura.modeling.models import build_model

    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", AugmentParams(), seed=0)
    compile_model(model, 1e-3)
    assert model.optimizer.built
    traces = []
    step = model.train_step

    def counting_step(data):
        traces.append(1)  # runs once per trace (graph backends) or per call (eager)
        return step(data)

    model.train_step = counting_step
    x, y = np.zeros((4, 32, 32, 1), np.uint8), np.array([0.0, 1.0, 0.0, 1.0])
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    expected = 2 if model.run_eagerly or keras.backend.backend() == "torch" else 1
    assert len(traces) == expected


@pytest.fixture(scope="module")
def phantoms() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2024)
    labels = (rng.random(1400) < 0.45).astype(np.int64)
    pixels = np.stack([resize_gray(render_phantom(BODY_PARTS[i % 7], bool(y), rng), 64) for i, y in enumerate(labels)])
    return pixels, labels


@pytest.mark.slow  # trains a CNN for many epochs (about a minute on 2 cores)
def test_short_training_learns_synthetic_phantoms(phantoms, tmp_path: Path) -> None:
    """The whole loop (feeding, augmentation, class weights, callbacks, best checkpoint) learns."""
    pixels, labels = phantoms
    data = TrainingData(np.arange(1100), labels[:1100], np.arange(1100, 1400), labels[1100:])
    train = TrainParams(
        epochs=24,
        batch_size=16,
        learning_rate=1e-3,
        pretrained="none",
        early_stopping_patience=24,
        reduce_lr_patience=3,
        workers=1,
    )
    spec = VariantSpec(
        "probe", ModelSpec(arch="simple_cnn", dense_units=64, dropout=0.2), train, AugmentParams(), 64, ("mura",), 0
    )
    result = fit_variant(spec, pixels, data, {"0": 0.45, "1": 0.55}, tmp_path / "probe.keras", tmp_path / "work")
    assert result.metrics["val_auc"] >= 0.90, result.history[["epoch", "auc", "val_auc"]]
    assert (tmp_path / "probe.keras").exists() and not (tmp_path / "work" / "backup").exists()
    assert list(result.history["epoch"]) == list(range(len(result.history)))


class _BatchCounter(keras.callbacks.Callback):
    """Training and validation batches of each epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.train: list[int] = []
        self.valid: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.train.append(0)
        self.valid.append(0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.train[-1] += 1

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.valid[-1] += 1


def test_bounded_subset() -> None:
    assert list(bounded_subset(5, 0, seed=1)) == list(range(5)) == list(bounded_subset(5, 9, seed=1))
    picked = bounded_subset(100, 7, seed=1)
    assert len(set(picked)) == 7 and list(picked) == sorted(picked) and list(picked) == list(bounded_subset(100, 7, seed=1))


@pytest.mark.slow  # the module's phantoms fixture (1,400 phantoms)
def test_rehearsal_caps_bound_the_steps_and_the_validation(phantoms, tmp_path: Path) -> None:
    """train.max_steps_per_epoch and train.max_valid_images (bench/rehearsal.py at MURA's scale)."""
    pixels, labels = phantoms
    data = TrainingData(np.arange(400), labels[:400], np.arange(400, 1400), labels[400:1400])
    train = TrainParams(
        epochs=2, batch_size=8, learning_rate=1e-3, pretrained="none", workers=1, max_steps_per_epoch=3, max_valid_images=40
    )
    spec = VariantSpec("capped", ModelSpec(arch="simple_cnn", dense_units=8), train, AugmentParams(), 64, ("mura",), 0)
    counter = _BatchCounter()
    fit_variant(spec, pixels, data, {"0": 0.5, "1": 0.5}, tmp_path / "capped.keras", tmp_path / "work", callbacks=[counter])
    assert counter.train == [3, 3]  # 50 batches of 8 without the cap
    assert counter.valid == [2, 2]  # 40 of the 1,000 valid images, in batches of 32 (32 without the cap)


class _Killed(Exception):
    pass


class _KillAfterEpoch(keras.callbacks.Callback):
    """Stands in for a kill -9 right after an epoch's backup was written."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.epoch:
            raise _Killed


@pytest.mark.slow  # two trainings, one killed and resumed
def test_killed_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(phantoms, tmp_path: Path) -> None:
    """Augmentation and dropout draw the same numbers, and the callbacks keep their counters, after a resume."""
    pixels, labels = phantoms
    data = TrainingData(np.arange(160), labels[:160], np.arange(160, 224), labels[160:224])
    train = TrainParams(
        epochs=3, batch_size=16, learning_rate=1e-3, pretrained="none", early_stopping_patience=1, reduce_lr_patience=1, workers=1
    )
    spec = VariantSpec(
        "probe",
        ModelSpec(arch="simple_cnn", dense_units=16, dropout=0.3),
        train,
        AugmentParams(rotation=10, shift=0.1, zoom=0.1),
        64,
        ("mura",),
        3,
    )
    weights = {"0": 0.45, "1": 0.55}
    whole = fit_variant(spec, pixels, data, weights, tmp_path / "a.keras", tmp_path / "work_a")
    with pytest.raises(_Killed):
        fit_variant(spec, pixels, data, weights, tmp_path / "b.keras", tmp_path / "work_b", callbacks=[_KillAfterEpoch(0)])
    assert (tmp_path / "work_b" / "backup").exists()
    resumed = fit_variant(spec, pixels, data, weights, tmp_path / "b.keras", tmp_path / "work_b")
    assert resumed.resumed and not whole.resumed
    pd.testing.assert_frame_equal(resumed.history, whole.history, check_exact=True)
    for a, b in zip(whole.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


BACKEND_PROBE = """
import numpy as np, keras
from mura.config import AugmentParams, ModelSpec
from mura.modeling.models import build_model
from mura.modeling.train import compile_model
keras.utils.set_random_seed(0)
model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", AugmentParams(), seed=0)
compile_model(model, 1e-3)
x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1)).astype("uint8")
logs = model.train_on_batch(x, np.array([0, 1] * 4, "float32"), return_dict=True)
assert np.isfinite(logs["loss"]), logs
print("backend", keras.backend.backend(), "ok")
"""


@pytest.mark.slow  # one backend per subprocess
@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_tiny_training_step_on_each_installed_backend(backend: str) -> None:
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    pytest.importorskip(module)
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run([sys.executable, "-c", BACKEND_PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"backend {backend} ok" in proc.stdout

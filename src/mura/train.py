"""Training one variant: data selection, feeding, fit with callbacks, resume, outputs.

Keras 3 only (``import keras``), so the same code runs on the TensorFlow
backend (the default) and on JAX (``KERAS_BACKEND=jax``, used on GPUs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from mura.config import AugmentParams, ModelParams, Params, TrainParams, model_params
from mura.errors import DataError
from mura.feed import CacheBatches, sample_weights, training_indices
from mura.models import HeadParams, build_model, set_backbone_trainable

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainingData:
    """Rows of the cache for training and validation, with labels."""

    train_rows: np.ndarray
    train_labels: np.ndarray
    valid_rows: np.ndarray
    valid_labels: np.ndarray


def select_rows(images: pd.DataFrame, split: pd.DataFrame, datasets: tuple[str, ...], n_cache_rows: int) -> TrainingData:
    """Pick the cache rows of the train and valid splits of the selected datasets.

    Args:
        images: images.csv (row i = cache row i).
        split: split.csv (image_id, split).
        datasets: ``data.train_datasets``.
        n_cache_rows: rows in pixels.npy.

    Returns:
        The training and validation rows and labels.

    Raises:
        DataError: the cache and listing disagree, a split is empty or has one class.
    """
    if n_cache_rows != len(images):
        raise DataError(
            f"data/interim/pixels.npy has {n_cache_rows} rows but images.csv has {len(images)}: rerun `dvc repro ingest`"
        )
    merged = images[["image_id", "dataset", "label"]].merge(split, on="image_id", how="left", validate="one_to_one")
    if merged["split"].isna().any():
        raise DataError("split.csv does not cover every row of images.csv: rerun `dvc repro split`")
    chosen = merged["dataset"].isin(datasets)
    out = {}
    for name in ("train", "valid"):
        mask = chosen & (merged["split"] == name)
        rows = np.flatnonzero(mask.to_numpy())
        labels = merged.loc[mask, "label"].to_numpy(dtype=np.int64)
        if len(rows) == 0:
            raise DataError(f"the {name} split is empty for data.train_datasets={list(datasets)}")
        if len(set(labels.tolist())) < 2:
            raise DataError(f"the {name} split has only one class (label {labels[0]}) for data.train_datasets={list(datasets)}")
        out[name] = (rows, labels)
    return TrainingData(out["train"][0], out["train"][1], out["valid"][0], out["valid"][1])


def resolve_precision(precision: str) -> str:
    """``auto`` → ``mixed_bfloat16`` on a GPU, ``float32`` on CPU; other values pass through."""
    if precision != "auto":
        return precision
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            has_gpu = any(d.platform == "gpu" for d in jax.devices())
        elif backend == "tensorflow":
            import tensorflow as tf  # only to ask for devices

            has_gpu = bool(tf.config.list_physical_devices("GPU"))
        elif backend == "torch":
            import torch

            has_gpu = torch.cuda.is_available()
        else:
            has_gpu = False
    except Exception:  # a broken accelerator stack means CPU
        has_gpu = False
    return "mixed_bfloat16" if has_gpu else "float32"


class _EpochSetter(keras.callbacks.Callback):
    """Tell the training batches which epoch starts (same shuffle after a resume)."""

    def __init__(self, batches: CacheBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches.set_epoch(epoch)


class _HistoryTrimmer(keras.callbacks.Callback):
    """After a resume, drop history rows of epochs the restored state has not completed.

    A kill can land after an epoch's row was written but before (or while) its backup
    was saved; the backup then restores an earlier epoch, and those rows would repeat.
    Runs between ``BackupAndRestore`` and ``CSVLogger`` in ``on_train_begin``.
    """

    def __init__(self, backup: Path, history_csv: Path) -> None:
        super().__init__()
        self.backup = backup
        self.history_csv = history_csv

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        meta = self.backup / "training_metadata.json"
        if not meta.exists() or not self.history_csv.exists():
            return
        try:
            done = int(json.loads(meta.read_text()).get("epoch", 0))
        except (ValueError, OSError):
            return
        history = pd.read_csv(self.history_csv)
        if (history["epoch"] >= done).any():
            history[history["epoch"] < done].to_csv(self.history_csv, index=False, lineterminator="\n")


class AtomicBestCheckpoint(keras.callbacks.Callback):
    """Save the model whenever ``monitor`` improves, atomically (temp file + rename)."""

    def __init__(self, path: Path, monitor: str, mode: str, best: float | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.better = np.greater if mode == "max" else np.less
        self.best = best  # from the history of an interrupted run

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or (self.best is not None and not self.better(value, self.best)):
            return
        self.best = float(value)
        save_model_atomic(self.model, self.path)


class ProgressLog(keras.callbacks.Callback):
    """One log line per epoch with its duration (the first includes compilation)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, (int, float)))
        logger.info("%s epoch %d (%.1fs): %s", self.name, epoch + 1, time.perf_counter() - self.start, shown)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Write ``model`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compile_model(model: keras.Model, learning_rate: float, build_optimizer: bool = True) -> None:
    """Adam + binary cross-entropy with accuracy, AUC, precision and recall.

    With ``build_optimizer`` (the default) the optimizer's slot variables are created
    here, not lazily inside the first traced training step: on the TensorFlow backend
    a ``tf.function`` that creates variables is traced twice, and for DenseNet-169 one
    trace costs about 25 s on a 2-core CPU (measured: first step 50 s → 25 s;
    ResNet-101 38 s → 20 s). ``False`` keeps Keras's lazy default (for benchmarks).
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc"),
                 keras.metrics.Precision(name="precision"), keras.metrics.Recall(name="recall")],  # fmt: skip
    )
    if build_optimizer:
        model.optimizer.build(model.trainable_variables)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`fit_variant` produced."""

    model: keras.Model
    history: pd.DataFrame
    metrics: dict[str, float]
    resumed: bool


def fit_variant(
    name: str,
    model_params: ModelParams,
    train: TrainParams,
    augment: AugmentParams,
    image_size: int,
    seed: int,
    pixels: np.ndarray,
    data: TrainingData,
    class_weights: dict[str, float],
    model_path: Path,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train one variant; resumable from ``work_dir`` after an interruption.

    Args:
        name: the variant name (``densenet169_a`` ...).
        model_params: its ``models.<name>`` entry.
        train: shared training params.
        augment: augmentation params.
        image_size: cache side.
        seed: global seed.
        pixels: the (N, S, S) uint8 cache.
        data: selected rows.
        class_weights: ``{"0": w0, "1": w1}``.
        model_path: where the best model is written (atomically).
        work_dir: per-variant folder for the resume backup and the history CSV.
        callbacks: extra callbacks (e.g. MLflow logging).

    Returns:
        The best model (restored weights), its history and validation metrics.
    """
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(resolve_precision(train.precision))
    pretrained = train.weights != "none"
    freeze_bn = train.batchnorm == "frozen" or (train.batchnorm == "auto" and pretrained)
    model = build_model(
        model_params.arch, image_size, train.weights, HeadParams(model_params.dense_units, model_params.dropout),
        augment, freeze_batchnorm=freeze_bn, seed=seed, zero_init_residual=train.zero_init_residual,
    )  # fmt: skip
    positions = training_indices(data.train_labels, model_params.oversample_abnormal)
    rows, labels = data.train_rows[positions], data.train_labels[positions]
    train_batches = CacheBatches(pixels, rows, labels, train.batch_size, shuffle=True, seed=seed,
                                 weights=sample_weights(labels, class_weights), workers=train.workers,
                                 drop_remainder=True)  # fmt: skip
    valid_batches = CacheBatches(pixels, data.valid_rows, data.valid_labels, max(train.batch_size, 32), workers=train.workers)
    mode = "max" if train.monitor == "val_auc" else "min"
    work_dir.mkdir(parents=True, exist_ok=True)
    backup = work_dir / "backup"
    history_csv = work_dir / "history.csv"
    resumed = backup.exists() and any(backup.iterdir())
    best_so_far = None
    if not resumed:
        history_csv.unlink(missing_ok=True)
    elif history_csv.exists() and model_path.exists():
        previous = pd.read_csv(history_csv)[train.monitor]
        best_so_far = float(previous.max() if mode == "max" else previous.min())
    logger.info("%s: %s, %d training images (%d after oversampling), %d validation, %s%s", name, model_params.arch,
                len(data.train_rows), len(rows), len(data.valid_rows), keras.config.dtype_policy().name,
                ", resuming" if resumed else "")  # fmt: skip
    standard = [
        _EpochSetter(train_batches),
        # double_checkpoint keeps the previous epoch's backup, used if a kill corrupted the latest.
        keras.callbacks.BackupAndRestore(str(backup), save_freq="epoch", delete_checkpoint=False, double_checkpoint=True),
        _HistoryTrimmer(backup, history_csv),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        keras.callbacks.ReduceLROnPlateau(monitor=train.monitor, mode=mode, factor=train.reduce_lr_factor,
                                          patience=train.reduce_lr_patience, min_lr=train.min_lr),  # fmt: skip
        keras.callbacks.EarlyStopping(monitor=train.monitor, mode=mode, patience=train.early_stopping_patience,
                                      restore_best_weights=True),  # fmt: skip
        AtomicBestCheckpoint(model_path, train.monitor, mode, best_so_far),
        ProgressLog(name),
        *(callbacks or []),
    ]
    phases = [(train.frozen_epochs, False), (train.epochs, True)] if train.frozen_epochs > 0 else [(train.epochs, True)]
    start = 0
    for end, backbone_trainable in phases:
        if pretrained or not backbone_trainable:
            set_backbone_trainable(model, backbone_trainable, freeze_batchnorm=freeze_bn)
        compile_model(model, train.learning_rate)
        model.fit(train_batches, validation_data=valid_batches, epochs=end, initial_epoch=start, callbacks=standard, verbose=2)
        start = end
    if model_path.exists():  # the best epoch, written by AtomicBestCheckpoint
        model = keras.saving.load_model(model_path)
    else:
        save_model_atomic(model, model_path)
    history = pd.read_csv(history_csv)
    shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts fresh
    history_csv.unlink()
    # The saved model holds the best epoch's weights, so that epoch's validation
    # metrics are the model's (no second evaluation pass needed).
    best = history[train.monitor].idxmax() if mode == "max" else history[train.monitor].idxmin()
    metrics: dict[str, float] = {k: float(history.loc[best, k]) for k in history.columns if k.startswith("val_")}
    metrics["best_epoch"] = int(history.loc[best, "epoch"]) + 1
    metrics["epochs_run"] = int(len(history))
    metrics["train_images"] = int(len(data.train_rows))
    return TrainResult(model=model, history=history, metrics=metrics, resumed=resumed)


def plot_history(history: pd.DataFrame, title: str, path: Path) -> None:
    """Loss / accuracy / AUC curves (train and validation), as the seed's Figures 8–11."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy", "auc")):
        if metric in history:
            epochs = history["epoch"] + 1
            ax.plot(epochs, history[metric], label="train")
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch's metrics (and learning rate) to the active MLflow run."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import mlflow

        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
        mlflow.log_metrics(values, step=epoch + 1)


@dataclass(frozen=True)
class VariantPaths:
    """Inputs and outputs of the ``train@<variant>`` stage."""

    images: Path
    split: Path
    pixels: Path
    class_weights: Path
    model: Path
    reports: Path
    work: Path


def run_variant(params: Params, variant: str, paths: VariantPaths) -> dict[str, Any]:
    """Train one variant, write its outputs and log it to MLflow (run + registered version).

    Args:
        params: all params.
        variant: key of ``models:``.
        paths: stage inputs and outputs.

    Returns:
        The metrics written to ``reports/train/<variant>/metrics.json``.

    Raises:
        ConfigError: bad variant params. DataError: bad inputs.
    """
    import mlflow
    from mlflow.models import infer_signature

    from mura.stage import write_json
    from mura.tracking import dataset_fingerprint, flatten_params, git_commit, setup_mlflow

    spec = model_params(params, variant)
    for path in (paths.images, paths.split, paths.pixels, paths.class_weights):
        if not Path(path).is_file():
            raise DataError(f"missing input {path}: run `dvc repro class_weights` first")
    images = pd.read_csv(paths.images, usecols=["image_id", "dataset", "label", "synthetic"])
    split = pd.read_csv(paths.split)
    pixels = np.load(paths.pixels, mmap_mode="r")
    if pixels.ndim != 3 or pixels.shape[1:] != (params.data.image_size, params.data.image_size):
        raise DataError(f"{paths.pixels} has shape {pixels.shape}, expected (N, {params.data.image_size}, "
                        f"{params.data.image_size}) for data.image_size: rerun `dvc repro ingest`")  # fmt: skip
    data = select_rows(images, split, params.data.train_datasets, len(pixels))
    class_weights = json.loads(Path(paths.class_weights).read_text())
    synthetic = bool(images["synthetic"].any())
    fingerprint = dataset_fingerprint(paths.images, paths.split)
    commit = git_commit()
    setup_mlflow()
    run_id_file = paths.work / "mlflow_run_id"
    run_id = run_id_file.read_text().strip() if run_id_file.exists() and (paths.work / "backup").exists() else None
    tags = {"variant": variant, "arch": spec.arch, "dataset_fingerprint": fingerprint, "git_commit": commit,
            "synthetic_data": str(synthetic).lower(), "mura.stage": "train"}  # fmt: skip
    with mlflow.start_run(run_id=run_id, run_name=variant, tags=tags) as run:
        paths.work.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.info.run_id)
        if run_id is None:
            logged = {"seed": params.seed, **flatten_params("data", params.data), **flatten_params("train", params.train),
                      **flatten_params("augment", params.augment), **flatten_params("model", spec),
                      "class_weight.0": class_weights["0"], "class_weight.1": class_weights["1"]}  # fmt: skip
            mlflow.log_params(logged)
        result = fit_variant(variant, spec, params.train, params.augment, params.data.image_size, params.seed, pixels,
                             data, class_weights, paths.model, paths.work, callbacks=[MlflowEpochLogger()])  # fmt: skip
        reports = Path(paths.reports)
        reports.mkdir(parents=True, exist_ok=True)
        result.history.to_csv(reports / "history.csv", index=False, lineterminator="\n")
        title = f"{variant} ({spec.arch}){' — SYNTHETIC DATA' if synthetic else ''}"
        plot_history(result.history, title, reports / "history.png")
        metrics = {**result.metrics, "synthetic_data": synthetic}
        write_json(reports / "metrics.json", metrics)
        mlflow.log_metrics({f"best_{k}": float(v) for k, v in result.metrics.items()})
        mlflow.log_artifact(str(reports / "history.png"))
        mlflow.log_artifact(str(reports / "history.csv"))
        example = np.asarray(pixels[data.valid_rows[:2]])[..., None]
        # The output is one probability per image; no need to trace predict() for it.
        signature = infer_signature(example, np.zeros((len(example), 1), np.float32))
        # mlflow.keras.log_model writes the input example before creating its folder
        # (MLflow 3.17), so save into a folder of ours, log it, and register that.
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "model"
            local.mkdir()
            mlflow.keras.save_model(result.model, str(local), signature=signature, input_example=example,
                                    pip_requirements=[f"keras=={keras.__version__}", "mura"])  # fmt: skip
            mlflow.log_artifacts(str(local), artifact_path="model")
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", f"mura-{variant}", tags=tags).version
        client = mlflow.MlflowClient()
        client.update_model_version(f"mura-{variant}", version, description=(
            f"{spec.arch} variant {variant}, best val_auc {result.metrics.get('val_auc', float('nan')):.4f}"
            + (" — trained on SYNTHETIC data, not a clinical model" if synthetic else "")))  # fmt: skip
        logger.info("%s: registered mura-%s version %s", variant, variant, version)
    run_id_file.unlink(missing_ok=True)
    return metrics

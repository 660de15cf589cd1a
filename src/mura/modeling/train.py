"""Training one variant: data selection, fit with resumable callbacks, outputs (the spec: :mod:`mura.modeling.spec`).

Keras 3 only (``import keras``), so the same code runs on the TensorFlow
backend (the default) and on JAX (``KERAS_BACKEND=jax``, used on GPUs).
The callbacks live in :mod:`mura.modeling.callbacks`, the MLflow run and the
registered model in :mod:`mura.modeling.registry`.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from mura.data.sources import FEEDBACK_DATASET
from mura.errors import DataError, TrackingError
from mura.modeling.callbacks import (
    AtomicBestCheckpoint,
    EpochSetter,
    HistoryTrimmer,
    MlflowEpochLogger,
    ProgressLog,
    ResumableBackup,
    backed_up_epoch,
    save_model_atomic,
)
from mura.modeling.feed import CacheBatches, fit_input, sample_weights, training_indices
from mura.modeling.models import build_model, set_backbone_trainable
from mura.modeling.optimizer import Adam
from mura.modeling.registry import (
    clear_pending,
    log_history,
    log_trained_variant,
    restore_pending,
    stash_pending,
    training_key,
    variant_run,
)
from mura.modeling.spec import VariantPaths, VariantSpec
from mura.stage import write_json
from mura.tracking import dataset_provenance, log_datasets, server_errors

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "TrainingData",
    "compile_model",
    "fit_variant",
    "plot_history",
    "resolve_precision",
    "run_train",
    "select_rows",
]


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
    chosen = merged["dataset"].isin((*datasets, FEEDBACK_DATASET))  # radiologist-labelled rows always train
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
            import jax  # lazy: heavy (seconds): only when a model is built, trained or run

            has_gpu = any(d.platform == "gpu" for d in jax.devices())
        elif backend == "tensorflow":
            import tensorflow as tf  # only to ask for devices

            has_gpu = bool(tf.config.list_physical_devices("GPU"))
        elif backend == "torch":
            import torch  # lazy: heavy (seconds): only when a model is built, trained or run

            has_gpu = torch.cuda.is_available()
        else:
            has_gpu = False
    except Exception:  # a broken accelerator stack means CPU
        has_gpu = False
    return "mixed_bfloat16" if has_gpu else "float32"


def compile_model(
    model: keras.Model, learning_rate: float, build_optimizer: bool = True, optimizer: keras.optimizers.Optimizer | None = None
) -> None:
    """Adam (:class:`mura.modeling.optimizer.Adam`) + binary cross-entropy with accuracy, AUC, precision and recall.

    With ``build_optimizer`` (the default) the optimizer's slot variables are created
    here, not lazily inside the first traced training step: on the TensorFlow backend
    a ``tf.function`` that creates variables is traced twice, and for DenseNet-169 one
    trace costs about 25 s on a 2-core CPU (measured: first step 50 s → 25 s;
    ResNet-101 38 s → 20 s). ``False`` keeps Keras's lazy default (for benchmarks).
    ``optimizer`` replaces the Adam (``learning_rate`` is then the optimizer's own).
    """
    model.compile(
        optimizer=optimizer or Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ],
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
    spec: VariantSpec,
    pixels: np.ndarray,
    data: TrainingData,
    class_weights: dict[str, float],
    model_path: Path,
    work_dir: Path,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train one variant; resumable from ``work_dir`` after an interruption.

    Long on purpose: restore, the training phases (frozen backbone, then fine-tuning) and the
    choice of the best epoch share the model and its checkpoints; splitting them would pass those around.

    Args:
        spec: the variant's params.
        pixels: the (N, S, S) uint8 cache.
        data: selected rows.
        class_weights: ``{"0": w0, "1": w1}``.
        model_path: where the best model is written (atomically).
        work_dir: per-variant folder for the resume backup and the history CSV.
        callbacks: extra callbacks (e.g. MLflow logging).

    Returns:
        The best model (its weights, uncompiled: no optimizer state), its history and validation metrics.
    """
    train = spec.train
    keras.utils.set_random_seed(spec.seed)
    keras.config.set_dtype_policy(resolve_precision(train.precision))
    pretrained = train.pretrained != "none"
    freeze_bn = train.batchnorm == "frozen" or (train.batchnorm == "auto" and pretrained)
    model = build_model(
        spec.model,
        spec.image_size,
        train.pretrained,
        spec.augment,
        freeze_batchnorm=freeze_bn,
        seed=spec.seed,
        zero_init_residual=train.zero_init_residual,
        batchnorm_momentum=train.batchnorm_momentum,
    )
    train_batches, valid_batches, n_oversampled = _batches(spec, pixels, data, class_weights)
    mode = "max" if train.monitor == "val_auc" else "min"
    work_dir.mkdir(parents=True, exist_ok=True)
    backup, history_csv = work_dir / "backup", work_dir / "history.csv"
    resumed, best_so_far = _resume_state(backup, history_csv, model_path, train.monitor, mode)
    logger.info(
        "%s: %s, %d training images (%d after oversampling), %d validation, %s%s",
        spec.name,
        spec.model.arch,
        len(data.train_rows),
        n_oversampled,
        len(data.valid_rows),
        keras.config.dtype_policy().name,
        ", resuming" if resumed else "",
    )
    standard = _callbacks(spec, train_batches, backup, history_csv, model_path, mode, best_so_far) + list(callbacks or [])
    # Keras prefetches the first batches before on_epoch_begin: start on the restored epoch's shuffle.
    train_batches.set_epoch(backed_up_epoch(backup))
    phases = [(train.frozen_epochs, False), (train.epochs, True)] if train.frozen_epochs > 0 else [(train.epochs, True)]
    start = 0
    for end, backbone_trainable in phases:
        if pretrained or not backbone_trainable:
            set_backbone_trainable(model, backbone_trainable, freeze_batchnorm=freeze_bn)
        compile_model(model, train.learning_rate)
        model.fit(
            fit_input(train_batches),
            validation_data=fit_input(valid_batches),
            epochs=end,
            initial_epoch=start,
            callbacks=standard,
            verbose=2,
        )
        start = end
    if not model_path.exists():  # no epoch improved on the monitor: the last one is the model
        save_model_atomic(model, model_path)
    # The best epoch (AtomicBestCheckpoint's file, weights without the optimizer's state), uncompiled.
    # Not model.load_weights(): it reads the archive's weights through zipfile, seeking backwards
    # (20 s for ResNet-101, profiled).
    model = keras.saving.load_model(model_path, compile=False)
    history = pd.read_csv(history_csv)
    shutil.rmtree(backup, ignore_errors=True)  # finished: the next run starts fresh
    history_csv.unlink()
    metrics = best_epoch_metrics(history, train.monitor, mode) | {"train_images": int(len(data.train_rows))}
    return TrainResult(model=model, history=history, metrics=metrics, resumed=resumed)


def _batches(
    spec: VariantSpec, pixels: np.ndarray, data: TrainingData, class_weights: dict[str, float]
) -> tuple[CacheBatches, CacheBatches, int]:
    """The training batches (oversampled, class-weighted, shuffled per epoch), the validation batches, the oversampled count."""
    train = spec.train
    positions = training_indices(data.train_labels, spec.model.oversample_abnormal)
    rows, labels = data.train_rows[positions], data.train_labels[positions]
    train_batches = CacheBatches(
        pixels,
        rows,
        labels,
        train.batch_size,
        shuffle=True,
        seed=spec.seed,
        sample_weights=sample_weights(labels, class_weights),
        workers=train.workers,
        drop_remainder=True,
        max_batches=train.max_steps_per_epoch,
    )
    keep = bounded_subset(len(data.valid_rows), train.max_valid_images, spec.seed)
    valid_batches = CacheBatches(
        pixels, data.valid_rows[keep], data.valid_labels[keep], max(train.batch_size, 32), workers=train.workers
    )
    return train_batches, valid_batches, len(rows)


def bounded_subset(count: int, limit: int, seed: int) -> np.ndarray:
    """Positions ``0..count-1``, or a seeded sorted random ``limit`` of them when ``0 < limit < count``."""
    if not 0 < limit < count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


def _resume_state(backup: Path, history_csv: Path, model_path: Path, monitor: str, mode: str) -> tuple[bool, float | None]:
    """Whether an interrupted run resumes, and the best monitored value its checkpoint already holds."""
    resumed = backup.exists() and any(backup.iterdir())
    if not resumed:
        history_csv.unlink(missing_ok=True)
        return False, None
    if history_csv.exists() and model_path.exists():
        previous = pd.read_csv(history_csv)[monitor]
        return True, float(previous.max() if mode == "max" else previous.min())
    return True, None


def _callbacks(
    spec: VariantSpec,
    train_batches: CacheBatches,
    backup: Path,
    history_csv: Path,
    model_path: Path,
    mode: str,
    best_so_far: float | None,
) -> list[keras.callbacks.Callback]:
    """The resumable training's callbacks, in the order that makes resuming exact."""
    train = spec.train
    reduce_lr = keras.callbacks.ReduceLROnPlateau(
        monitor=train.monitor, mode=mode, factor=train.reduce_lr_factor, patience=train.reduce_lr_patience, min_lr=train.min_lr
    )
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=train.monitor, mode=mode, patience=train.early_stopping_patience, restore_best_weights=True
    )
    # Order matters: the backup comes after the stateful callbacks (it saves what they
    # updated at an epoch's end and restores what their on_train_begin reset), and
    # before the trimmer and the CSV logger (which need the restored epoch).
    return [
        EpochSetter(train_batches),
        reduce_lr,
        early_stopping,
        ResumableBackup(backup, stateful=[reduce_lr, early_stopping], last_epoch=train.epochs),
        HistoryTrimmer(backup, history_csv),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
        AtomicBestCheckpoint(model_path, train.monitor, mode, best_so_far),
        ProgressLog(spec.name),
    ]


def best_epoch_metrics(history: pd.DataFrame, monitor: str, mode: str) -> dict[str, float]:
    """The best epoch's validation metrics, its number (1-based) and the epochs run (pure).

    The saved model holds the best epoch's weights, so that epoch's validation metrics are
    the model's (no second evaluation pass needed).
    """
    best = history[monitor].idxmax() if mode == "max" else history[monitor].idxmin()
    metrics: dict[str, float] = {k: float(history.loc[best, k]) for k in history.columns if k.startswith("val_")}
    metrics["best_epoch"] = int(history.loc[best, "epoch"]) + 1
    metrics["epochs_run"] = int(len(history))
    return metrics


def plot_history(history: pd.DataFrame, title: str, path: Path) -> None:
    """Loss / accuracy / AUC curves (train and validation), as the seed's Figures 8–11."""
    import matplotlib  # lazy: heavy: only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: heavy: only when plotting

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy", "auc"), strict=True):
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


REPORT_FILES = ("history.csv", "history.png", "metrics.json")


def run_train(spec: VariantSpec, paths: VariantPaths, tracking: bool = True) -> dict[str, Any]:
    """The ``train@<variant>`` stage: train, write its outputs, log and register it in MLflow.

    Args:
        spec: the variant's params.
        paths: stage inputs and outputs.
        tracking: log and register in MLflow (the pipeline always does). False: the same training
            and files, nothing logged, one warning — for a machine without MLflow (``--no-tracking``).

    Returns:
        The metrics written to ``reports/train/<variant>/metrics.json``.

    Raises:
        DataError: missing or inconsistent inputs.
    """
    inputs = _read_inputs(spec, paths)
    if not tracking:
        logger.warning("train@%s without tracking (--no-tracking): nothing is logged to or registered in MLflow", spec.name)
        return _train_and_report(spec, paths, inputs, [])[2]
    key = training_key(spec, inputs.class_weights, inputs.provenance.fingerprint, Path(paths.pixels))
    reports = Path(paths.reports)
    # A finished training whose logging failed is kept (with its reports) in the work folder:
    # DVC deletes a stage's outputs before rerunning it, so they cannot wait in place.
    kept = {"model.keras": Path(paths.model), **{name: reports / name for name in REPORT_FILES}}
    pending = restore_pending(paths.work, key, kept)
    synthetic, fingerprint = inputs.provenance.synthetic, inputs.provenance.fingerprint
    with variant_run(spec, inputs.class_weights, fingerprint, synthetic, paths.work) as run:
        with server_errors(f"logging the datasets of train@{spec.name}"):
            log_datasets(paths.images, paths.split, ("train", "valid"), fingerprint)
        if pending is not None:  # trained before, its logging failed: log it now, no retraining
            logger.info("%s: trained already (%s); logging and registering it without retraining", spec.name, paths.model)
            model = keras.saving.load_model(paths.model, compile=False)
            history = pd.read_csv(reports / "history.csv")
            metrics: dict[str, Any] = json.loads((reports / "metrics.json").read_text())
            best = {k: v for k, v in metrics.items() if k != "synthetic_data"}
            unlogged_from: int | None = pending["unlogged_from_epoch"]
        else:
            clear_pending(paths.work)
            epoch_logger = MlflowEpochLogger()
            model, history, metrics = _train_and_report(spec, paths, inputs, [epoch_logger])
            best = {k: v for k, v in metrics.items() if k != "synthetic_data"}
            unlogged_from = epoch_logger.unlogged_from
        example = np.asarray(inputs.pixels[inputs.data.valid_rows[:2]])[..., None]
        try:
            with server_errors(f"logging train@{spec.name}"):
                if unlogged_from is not None:
                    log_history(history, unlogged_from)
                log_trained_variant(run, spec, model, best, reports, example, synthetic)
        except TrackingError as exc:
            stash_pending(paths.work, key, unlogged_from, kept)
            raise TrackingError(
                f"{exc}; the trained model is saved in {paths.model}: rerun `dvc repro` once the server answers,"
                " it logs and registers the model without retraining"
            ) from None
        clear_pending(paths.work)
    return metrics


@dataclass(frozen=True)
class _Inputs:
    """What a training reads: the cache, the selected rows, the class weights and the data's provenance."""

    pixels: np.ndarray
    data: TrainingData
    class_weights: dict[str, float]
    provenance: Any


def _read_inputs(spec: VariantSpec, paths: VariantPaths) -> _Inputs:
    """The stage's inputs, checked.

    Raises:
        DataError: a missing input, or a cache of another image size.
    """
    for path in (paths.images, paths.split, paths.pixels, paths.class_weights):
        if not Path(path).is_file():
            raise DataError(f"missing input {path}: run `dvc repro class_weights` first")
    images = pd.read_csv(paths.images, usecols=["image_id", "dataset", "label", "synthetic"])
    split = pd.read_csv(paths.split)
    pixels = np.load(paths.pixels, mmap_mode="r")
    size = spec.image_size
    if pixels.ndim != 3 or pixels.shape[1:] != (size, size):
        raise DataError(
            f"{paths.pixels} has shape {pixels.shape}, expected (N, {size}, {size}) for data.image_size: rerun `dvc repro ingest`"
        )
    data = select_rows(images, split, spec.train_datasets, len(pixels))
    class_weights = json.loads(Path(paths.class_weights).read_text())
    return _Inputs(pixels, data, class_weights, dataset_provenance(paths.images, paths.split))


def _train_and_report(
    spec: VariantSpec, paths: VariantPaths, inputs: _Inputs, callbacks: list[keras.callbacks.Callback]
) -> tuple[keras.Model, pd.DataFrame, dict[str, Any]]:
    """Train (resumable) and write ``reports/train/<variant>/`` (history.csv, history.png, metrics.json)."""
    synthetic = inputs.provenance.synthetic
    result = fit_variant(spec, inputs.pixels, inputs.data, inputs.class_weights, paths.model, paths.work, callbacks=callbacks)
    reports = Path(paths.reports)
    reports.mkdir(parents=True, exist_ok=True)
    result.history.to_csv(reports / "history.csv", index=False, lineterminator="\n")
    title = f"{spec.name} ({spec.model.arch}){' — SYNTHETIC DATA' if synthetic else ''}"
    plot_history(result.history, title, reports / "history.png")
    metrics = {**result.metrics, "synthetic_data": synthetic}
    write_json(reports / "metrics.json", metrics)
    return result.model, result.history, metrics

"""MLflow bookkeeping of one trained variant: its run (params, per-epoch metrics) and registered model.

Kept apart from :mod:`mura.modeling.train` so the training loop does not know
about the tracking server; the run id is kept in the variant's work folder so
an interrupted and resumed training continues the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mura.tracking import flatten_params, server_errors, setup_mlflow, source_tags

if TYPE_CHECKING:
    import keras

    from mura.modeling.spec import VariantSpec

logger = logging.getLogger(__name__)

__all__ = [
    "clear_pending",
    "log_history",
    "log_trained_variant",
    "metrics_to_replay",
    "restore_pending",
    "stash_pending",
    "registered_name",
    "training_key",
    "variant_run",
]

RUN_ID_FILE = "mlflow_run_id"
PENDING_DIR = "pending"  # in the work folder: a finished model whose logging failed, and its record
PENDING_FILE = "pending_log.json"


def registered_name(variant: str) -> str:
    """Name of a variant's registered model (``mura-<variant>``)."""
    return f"mura-{variant}"


@contextmanager
def variant_run(
    spec: VariantSpec, class_weights: dict[str, float], fingerprint: str, synthetic: bool, work_dir: Path
) -> Iterator[Any]:
    """Start (or, after an interruption, continue) the variant's MLflow run and log its params once.

    The run is continued when the work folder holds a resume backup or a trained model
    whose logging failed (:func:`stash_pending`). A tracking server that is down or refuses
    the credentials raises :class:`~mura.errors.TrackingError` here, before any training.

    Args:
        spec: the variant's params (logged as MLflow params).
        class_weights: the class weights (logged as params).
        fingerprint: dataset fingerprint (tag).
        synthetic: trained on synthetic data (tag).
        work_dir: the variant's work folder (holds the run id while training or logging is unfinished).

    Yields:
        The active ``mlflow.ActiveRun``.
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    setup_mlflow()
    run_id_file = work_dir / RUN_ID_FILE
    unfinished = (work_dir / "backup").exists() or (work_dir / PENDING_DIR / PENDING_FILE).exists()
    run_id = run_id_file.read_text().strip() if run_id_file.exists() and unfinished else None
    tags = {
        "variant": spec.name,
        "arch": spec.model.arch,
        "dataset_fingerprint": fingerprint,
        **source_tags(),
        "synthetic_data": str(synthetic).lower(),
        "mura.stage": "train",
    }
    with server_errors(f"starting the MLflow run of train@{spec.name}"):
        run = mlflow.start_run(run_id=run_id, run_name=spec.name, tags=tags)
        work_dir.mkdir(parents=True, exist_ok=True)
        run_id_file.write_text(run.info.run_id)
        if run_id is None:
            mlflow.log_params(
                {
                    "seed": spec.seed,
                    "data.image_size": spec.image_size,
                    "data.train_datasets": ",".join(spec.train_datasets),
                    **flatten_params("train", spec.train),
                    **flatten_params("augment", spec.augment),
                    **flatten_params("model", spec.model),
                    "class_weight.0": class_weights["0"],
                    "class_weight.1": class_weights["1"],
                }
            )
    try:
        yield run
    except BaseException:
        try:  # mark it failed if the server is there; never hide the error that got us here
            mlflow.end_run("FAILED")
        except Exception:
            logger.warning("%s: could not mark the MLflow run as failed (tracking server unreachable)", spec.name)
        raise
    with server_errors(f"closing the MLflow run of train@{spec.name}"):
        mlflow.end_run()
    run_id_file.unlink(missing_ok=True)


def training_key(spec: VariantSpec, class_weights: dict[str, float], fingerprint: str, pixels: Path) -> str:
    """What identifies one training's result: the variant's params, class weights and input data."""

    stat = pixels.stat()
    doc = {
        "spec": {k: str(v) for k, v in flatten_params("", spec).items()},
        "class_weights": class_weights,
        "fingerprint": fingerprint,
        "pixels": [stat.st_size, stat.st_mtime_ns],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def restore_pending(work_dir: Path, key: str, files: dict[str, Path]) -> dict[str, Any] | None:
    """Put back this training's finished model and reports kept by :func:`stash_pending`, if any.

    Args:
        work_dir: the variant's work folder.
        key: :func:`training_key` of the training now asked for (another training's files are ignored).
        files: stashed name -> where the stage writes it.

    Returns:
        The record (``unlogged_from_epoch``) when the files were restored, else None.
    """
    folder = work_dir / PENDING_DIR
    marker = folder / PENDING_FILE
    if not marker.exists():
        return None
    doc: dict[str, Any] = json.loads(marker.read_text())
    if doc.get("key") != key or not all((folder / name).exists() for name in files):
        return None
    for name, dest in files.items():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / name, dest)
    return doc


def stash_pending(work_dir: Path, key: str, unlogged_from_epoch: int | None, files: dict[str, Path]) -> None:
    """Keep a finished training whose logging failed (DVC deletes a stage's outputs before rerunning it)."""
    folder = work_dir / PENDING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        shutil.copy2(src, folder / name)
    (folder / PENDING_FILE).write_text(json.dumps({"key": key, "unlogged_from_epoch": unlogged_from_epoch}) + "\n")


def clear_pending(work_dir: Path) -> None:
    shutil.rmtree(work_dir / PENDING_DIR, ignore_errors=True)


def metrics_to_replay(history: Any, from_epoch: int, logged: dict[str, set[int]]) -> list[tuple[str, float, int]]:
    """The (key, value, step) of ``history`` rows from epoch ``from_epoch`` on that the run does not have yet (pure).

    Args:
        history: the training's per-epoch table (``epoch`` 0-based, one column per metric).
        from_epoch: the first epoch (0-based) the epoch logger did not see logged.
        logged: key → the steps (1-based epochs) the tracking server already holds.

    Returns:
        What to send, in epoch then column order: nothing the server has, so a replay after a
        server that stored an epoch and died before answering logs each step once.
    """
    out = []
    for _, row in history.iterrows():
        epoch = int(row["epoch"])
        if epoch < from_epoch:
            continue
        for key, value in row.items():
            if key != "epoch" and epoch + 1 not in logged.get(str(key), set()):
                out.append((str(key), float(value), epoch + 1))
    return out


def log_history(history: Any, from_epoch: int) -> None:
    """Log the per-epoch metrics of ``history`` rows from epoch ``from_epoch`` on that the active run lacks.

    Idempotent: the run's metric histories are read first, so an epoch the server stored before
    it died (the epoch logger saw a failure, not the write) is not sent twice.
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store
    from mlflow.entities import Metric  # lazy: heavy (~1 s): only when talking to the tracking store

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_history needs an active MLflow run")
    client = mlflow.MlflowClient()
    keys = [str(k) for k in history.columns if k != "epoch"]
    logged = {k: {m.step for m in client.get_metric_history(run.info.run_id, k)} for k in keys}
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, step) for key, value, step in metrics_to_replay(history, from_epoch, logged)]
    if metrics:
        client.log_batch(run.info.run_id, metrics=metrics)


def log_trained_variant(
    run: Any,
    spec: VariantSpec,
    model: keras.Model,
    metrics: dict[str, float],
    reports: Path,
    example: np.ndarray,
    synthetic: bool,
) -> str:
    """Log the best metrics, the history files and the Keras model, and register ``mura-<variant>``.

    Args:
        run: the active run from :func:`variant_run`.
        spec: the variant's params.
        model: the trained (best) model.
        metrics: its validation metrics.
        reports: folder holding ``history.png`` and ``history.csv``.
        example: a few input images (the model signature's example).
        synthetic: trained on synthetic data.

    Returns:
        The registered version.
    """
    import keras  # lazy: heavy (seconds): only when a model is built, trained or run
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store
    from mlflow.models import infer_signature  # lazy: heavy (~1 s): only when talking to the tracking store

    mlflow.log_metrics({f"best_{k}": float(v) for k, v in metrics.items()})
    mlflow.log_artifact(str(reports / "history.png"))
    mlflow.log_artifact(str(reports / "history.csv"))
    # The output is one probability per image; no need to trace predict() for it.
    signature = infer_signature(example, np.zeros((len(example), 1), np.float32))
    # mlflow.keras.log_model writes the input example before creating its folder
    # (MLflow 3.17), so save into a folder of ours, log it, and register that.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        local.mkdir()
        mlflow.keras.save_model(
            model,
            str(local),
            signature=signature,
            input_example=example,
            pip_requirements=[f"keras=={keras.__version__}", "mura"],
        )
        mlflow.log_artifacts(str(local), artifact_path="model")
    name = registered_name(spec.name)
    tags = dict(run.data.tags) if hasattr(run, "data") else {}
    tags = {k: v for k, v in tags.items() if not k.startswith("mlflow.")}
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", name, tags=tags).version)
    mlflow.MlflowClient().update_model_version(
        name,
        version,
        description=(
            f"{spec.model.arch} variant {spec.name}, best val_auc {metrics.get('val_auc', float('nan')):.4f}"
            + (" — trained on SYNTHETIC data, not a clinical model" if synthetic else "")
        ),
    )
    logger.info("%s: registered %s version %s", spec.name, name, version)
    return version

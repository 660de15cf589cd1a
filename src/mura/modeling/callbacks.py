"""Keras callbacks of the training loop: resumable backups, history, best checkpoint, progress, MLflow.

A run killed at any point and started again continues from its last completed
epoch and ends with the same model, bit for bit, as a run that was never
interrupted (on CPU; tested with the small CNN): :class:`ResumableBackup`
restores, besides Keras's weights and optimizer state, the random-generator
states of the augmentation and dropout layers and the counters of
``EarlyStopping`` and ``ReduceLROnPlateau``, and the shuffle order is a
function of the epoch (:class:`EpochSetter`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from mura.modeling.feed import CacheBatches

logger = logging.getLogger(__name__)

__all__ = [
    "AtomicBestCheckpoint",
    "EpochSetter",
    "HistoryTrimmer",
    "MlflowEpochLogger",
    "ProgressLog",
    "ResumableBackup",
    "backed_up_epoch",
    "save_model_atomic",
]

_STATE_PREFIX = "state-epoch-"
_KEPT_STATES = 2  # the latest and the previous one (BackupAndRestore's double checkpoint)


def save_model_atomic(model: keras.Model, path: Path) -> None:
    """Write ``model``'s architecture and weights to ``path`` via a temporary file in the same folder and a rename.

    Without the optimizer's state: a compiled functional model is saved through an uncompiled
    model on the same layers (no copy of the weights). Adam's two moments would triple the file
    (ResNet-101: 501 → 168 MB) for nothing that reads it — inference, export and serving load
    the weights, and a resumed training restores the optimizer from its own backup
    (:class:`ResumableBackup`). Measured on ResNet-101: 1.7–2.7 s → 1.1–1.2 s per save, and
    every later load 0.5 s shorter.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(model, "optimizer", None) is not None and getattr(model, "inputs", None):  # compiled and functional
        # the same layers, uncompiled; input/output keep the structures the model was built with
        # (inputs/outputs are lists: a one-output model would come back returning a list)
        model = keras.Model(model.input, model.output, name=model.name)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=path.parent, prefix=f".{path.stem}.")
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def backed_up_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a backup folder (0 when there is none)."""
    meta = Path(backup_dir) / "training_metadata.json"
    try:
        return int(json.loads(meta.read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


class EpochSetter(keras.callbacks.Callback):
    """Tell the training batches which epoch starts (same shuffle after a resume)."""

    def __init__(self, batches: CacheBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.batches.set_epoch(epoch)


def _seed_states(model: keras.Model) -> list[keras.Variable]:
    """The state variables of every random generator in the model (augmentation, dropout)."""
    return [v for v in model.variables if v.name == "seed_generator_state"]


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that also restores what Keras's backup leaves out.

    Keras saves the weights, the optimizer state and the epoch; it does not save
    the random-generator states of the layers (so augmentation and dropout would
    draw other numbers after a resume), Python's and NumPy's global generators
    (``fit(shuffle=True)`` permutes a ``PyDataset``'s batch order with Python's
    ``random``), nor the counters of the stateful callbacks (``EarlyStopping`` and
    ``ReduceLROnPlateau`` would restart their patience). This callback writes
    those, per epoch, *before* Keras's backup of the same epoch, and restores the
    state of the epoch Keras restored.

    Place it after the callbacks in ``stateful`` (their ``on_train_begin`` resets
    them, ours then restores them; their ``on_epoch_end`` updates them, ours then
    saves them).

    The training's final epoch (``last_epoch``, or the one ``EarlyStopping`` ends it on) is not
    backed up: the run finishes right after it and deletes the backup, and the save cost a
    weights file written and the previous one copied (~1.5 GB of writes per ResNet-101 stage
    at 64² with Adam's moments).

    Args:
        backup_dir: the backup folder.
        stateful: callbacks whose counters are saved and restored.
        last_epoch: the training's number of epochs (over every ``fit`` of a phased schedule).
    """

    STATE_ATTRIBUTES = ("wait", "best", "best_epoch", "stopped_epoch", "cooldown_counter")

    def __init__(self, backup_dir: str | Path, stateful: list[keras.callbacks.Callback], last_epoch: int) -> None:
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False, double_checkpoint=True)
        self.stateful = stateful
        self.last_epoch = last_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        final_fit = self.params.get("epochs") == self.last_epoch
        if epoch + 1 >= self.last_epoch or (final_fit and self.model.stop_training):
            self._current_epoch = epoch + 1  # the training ends here: nothing will resume from this epoch
            return
        super().on_epoch_end(epoch, logs)

    def _state_path(self, epoch: int) -> Path:
        return Path(self.backup_dir) / f"{_STATE_PREFIX}{epoch}.json"

    def _save_model(self) -> None:
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        epoch = int(self._current_epoch)
        state = {
            "epoch": epoch,
            "seeds": [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in _seed_states(self.model)],
            "python_random": _python_random_state(),
            "numpy_random": _numpy_random_state(),
            "callbacks": [{k: _to_json(getattr(cb, k)) for k in self.STATE_ATTRIBUTES if hasattr(cb, k)} for cb in self.stateful],
        }
        _write_json_atomic(self._state_path(epoch), state)
        for old in Path(self.backup_dir).glob(f"{_STATE_PREFIX}*.json"):
            if int(old.stem.removeprefix(_STATE_PREFIX)) <= epoch - _KEPT_STATES:
                old.unlink(missing_ok=True)
        super()._save_model()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        epoch = backed_up_epoch(Path(self.backup_dir))
        if epoch == 0:
            return
        path = self._state_path(epoch)
        if not path.exists():
            logger.warning(
                "resuming at epoch %d without its random-generator state: the run will differ from an uninterrupted one", epoch
            )
            return
        state = json.loads(path.read_text())
        variables = _seed_states(self.model)
        if len(variables) != len(state["seeds"]):
            raise ValueError(f"backup has {len(state['seeds'])} generator states, the model {len(variables)}")
        for variable, value in zip(variables, state["seeds"], strict=True):
            variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))
        version, internal, gauss = state["python_random"]
        random.setstate((version, tuple(internal), gauss))
        name, keys, pos, has_gauss, cached = state["numpy_random"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
        for callback, values in zip(self.stateful, state["callbacks"], strict=True):
            for key, value in values.items():
                setattr(callback, key, _from_json(value))


def _python_random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_random_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def _to_json(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return {"float": "inf" if value == math.inf else "-inf" if value == -math.inf else value}
    if isinstance(value, (np.integer, int)):
        return int(value)
    return None


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        return float(value["float"])
    return value


class HistoryTrimmer(keras.callbacks.Callback):
    """After a resume, drop history rows of epochs the restored state has not completed.

    A kill can land after an epoch's row was written but before (or while) its backup
    was saved; the backup then restores an earlier epoch, and those rows would repeat.
    Runs between the backup and ``CSVLogger`` in ``on_train_begin``.
    """

    def __init__(self, backup: Path, history_csv: Path) -> None:
        super().__init__()
        self.backup = backup
        self.history_csv = history_csv

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not (self.backup / "training_metadata.json").exists() or not self.history_csv.exists():
            return
        done = backed_up_epoch(self.backup)
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


class MlflowEpochLogger(keras.callbacks.Callback):
    """Log every epoch's metrics (and learning rate) to the active MLflow run.

    A tracking server that stops answering never stops the training: the first
    failure is logged as a warning, later epochs are not tried, and
    :attr:`unlogged_from` tells the stage which epochs to log afterwards.
    """

    def __init__(self) -> None:
        super().__init__()
        self.unlogged_from: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

        if self.unlogged_from is not None:
            return
        values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float, np.floating))}
        try:
            mlflow.log_metrics(values, step=epoch + 1)
        except Exception as exc:
            self.unlogged_from = epoch
            logger.warning(
                "MLflow did not take epoch %d's metrics (%s); training goes on, they are logged with the model",
                epoch + 1,
                type(exc).__name__,
            )

"""MLflow helpers: tracking URI, dataset fingerprint, git commit, run parameters.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (environment, never
params.yaml); the default is a SQLite file ``mlflow.db`` in the working
directory, which the model registry needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "mura"
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, sessions); ours
# holds classic training runs, so mark it as a model-training experiment (the UI's runs table).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def setup_mlflow(experiment: str | None = None) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment.

    Artifacts of a new experiment go to ``./mlartifacts`` next to the SQLite store.

    Returns:
        The experiment id.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        experiment_id = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    else:
        experiment_id = mlflow.create_experiment(
            name, artifact_location=(Path.cwd() / "mlartifacts").as_uri(), tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}
        )
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


def dataset_fingerprint(*files: str | Path) -> str:
    """SHA-256 over the given files' bytes (images.csv + split.csv identify the data)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


def git_commit() -> str:
    """``$MURA_GIT_COMMIT``, else ``git rev-parse HEAD``, else ``unknown``."""
    if os.environ.get("MURA_GIT_COMMIT"):
        return os.environ["MURA_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten_params(prefix: str, value: Any) -> dict[str, Any]:
    """Flatten dataclasses/dicts into ``{"a.b": v}`` for ``mlflow.log_params``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.name != "raw"}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten_params(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    if isinstance(value, (list, tuple)):
        return {prefix: ",".join(map(str, value))}
    return {prefix: value}

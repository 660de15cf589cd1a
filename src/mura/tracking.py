"""MLflow helpers: tracking URI, dataset fingerprint, git commit, run parameters.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (environment, never
params.yaml); the default is a SQLite file ``mlflow.db`` in the working
directory, which the model registry needs. With a tracking server (``http(s)://``,
README "Team setup") the server owns artifact storage (proxied ``mlflow-artifacts:``),
the credentials come from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, and a server
that is down or refuses them stops a stage within seconds with one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mura.errors import MuraError, TrackingError

logger = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "mura"
# MLflow 3's UI opens an experiment without this tag in its GenAI view (traces, sessions); ours
# holds classic training runs, so mark it as a model-training experiment (the UI's runs table).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def is_server(uri: str) -> bool:
    """True for a tracking server (``http(s)://``), false for a local store (SQLite, folder)."""
    return uri.split(":", 1)[0].lower() in ("http", "https")


def redact(uri: str) -> str:
    """``uri`` without any ``user:password@`` part (for messages and logs)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


# With a tracking server, give up after ~3 s instead of MLflow's ~4 minutes of retries: a stage
# must fail before hours of training, not after. Users may set these themselves.
FAIL_FAST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def use_tracking_uri(uri: str) -> str:
    """Point MLflow at ``uri``; for a server, with the fail-fast HTTP retries (unless the user set them)."""
    import mlflow

    if is_server(uri):
        for key, value in FAIL_FAST.items():
            os.environ.setdefault(key, value)
    mlflow.set_tracking_uri(uri)
    return uri


def tracking_failure(exc: BaseException, uri: str, doing: str) -> TrackingError:
    """One line saying what failed with the tracking server ``uri`` while ``doing``; never a secret."""
    text = str(exc)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    where = f"MLflow tracking server {redact(uri)}"
    if "401" in text or "not authenticated" in text.lower():
        who = f"user {user!r}" if user else "no user (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
        return TrackingError(f"{where} refused the credentials of {who} (HTTP 401) while {doing}")
    if "403" in text or "permission" in text.lower():
        return TrackingError(f"{where}: user {user!r} lacks the permission for {doing} (HTTP 403)")
    if any(s in text for s in ("Connection refused", "Max retries exceeded", "Failed to establish", "timed out", "Read timed")):
        return TrackingError(f"{where} is unreachable (connection refused or timed out) while {doing}")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return TrackingError(f"{where} failed while {doing}: {first[:300]}")


def setup_mlflow(experiment: str | None = None) -> str:
    """Point MLflow at the tracking store and select (or create) the experiment.

    With the local SQLite store, a new experiment's artifacts go to ``./mlartifacts``
    next to it. With a tracking server, the server chooses (its proxied artifact
    store), and a server that is down or refuses the credentials raises at once.

    Returns:
        The experiment id.

    Raises:
        TrackingError: the tracking server is unreachable or refused the request.
    """
    import mlflow

    # Under `mlflow run` (MLproject), MLFLOW_RUN_ID names the launcher's run; left set, every run a
    # stage starts would resume that one run (and clash on params). Our runs become its children.
    launcher = os.environ.pop("MLFLOW_RUN_ID", None)
    if launcher:
        os.environ["MURA_PARENT_RUN_ID"] = launcher
    uri = use_tracking_uri(tracking_uri())
    server = is_server(uri)
    name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        found = mlflow.get_experiment_by_name(name)
        if found is not None:
            experiment_id = found.experiment_id
            if EXPERIMENT_KIND_TAG not in found.tags:
                mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
        else:
            location = None if server else (Path.cwd() / "mlartifacts").as_uri()
            experiment_id = mlflow.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        mlflow.set_experiment(experiment_id=experiment_id)
    except Exception as exc:
        if not server:
            raise
        raise tracking_failure(exc, uri, f"opening experiment {name!r}") from None
    return str(experiment_id)


@contextmanager
def server_errors(doing: str, uri: str | None = None) -> Iterator[None]:
    """Turn a tracking-server failure inside the block into one :class:`TrackingError` line (local stores: unchanged)."""
    uri = uri or tracking_uri()
    try:
        yield
    except MuraError:
        raise
    except Exception as exc:
        if not is_server(uri):
            raise
        raise tracking_failure(exc, uri, doing) from None


def source_tags() -> dict[str, str]:
    """Run tags naming the code: ``git_commit`` and MLflow's own ``mlflow.source.git.commit`` (shown in its UI)."""
    commit = git_commit()
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit}
    if os.environ.get("MURA_PARENT_RUN_ID"):  # launched by `mlflow run`: shown nested under its run
        tags["mlflow.parentRunId"] = os.environ["MURA_PARENT_RUN_ID"]
    return tags


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

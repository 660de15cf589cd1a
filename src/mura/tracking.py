"""MLflow helpers: tracking URI, dataset fingerprint, git commit, run parameters.

The tracking URI comes from ``MLFLOW_TRACKING_URI`` (environment, never
params.yaml); the default is a SQLite file ``mlflow.db`` in the working
directory, which the model registry needs. With a tracking server (``http(s)://``,
docs/team.md) the server owns artifact storage (proxied ``mlflow-artifacts:``),
the credentials come from ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, and a server
that is down or refuses them stops a stage within seconds with one line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import subprocess
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from mura.errors import MuraError, TrackingError
from mura.settings import runtime_settings

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
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

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
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

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


# Set by DVC in every stage's environment during `dvc exp run` (workspace or queued).
DVC_EXP_NAME = "DVC_EXP_NAME"
DVC_EXP_BASELINE_REV = "DVC_EXP_BASELINE_REV"
PIPELINE_RUN_TAG = "mura.pipeline_run"
DVC_EXP_TAG = "dvc.exp_name"
DVC_BASELINE_TAG = "dvc.exp_baseline_rev"


def source_tags() -> dict[str, str]:
    """Run tags naming the code, the pipeline run and the DVC experiment a stage's run belongs to.

    ``git_commit`` and MLflow's own ``mlflow.source.git.commit`` (shown in its UI);
    ``mura.pipeline_run`` (:func:`pipeline_run_id`), shared by the stage runs of one
    ``dvc repro``, ``dvc exp run`` or Kubeflow run; during ``dvc exp run`` also the
    experiment's name and baseline revision (``dvc.exp_name``, ``dvc.exp_baseline_rev``).
    """
    commit = git_commit()
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit}
    if os.environ.get("MURA_PARENT_RUN_ID"):  # launched by `mlflow run`: shown nested under its run
        tags["mlflow.parentRunId"] = os.environ["MURA_PARENT_RUN_ID"]
    pipeline = pipeline_run_id()
    if pipeline:
        tags[PIPELINE_RUN_TAG] = pipeline
    if os.environ.get(DVC_EXP_NAME):
        tags[DVC_EXP_TAG] = os.environ[DVC_EXP_NAME]
    if os.environ.get(DVC_EXP_BASELINE_REV):
        tags[DVC_BASELINE_TAG] = os.environ[DVC_EXP_BASELINE_REV]
    return tags


def _process(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, start time in clock ticks, command line) of a Linux process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[19], cmdline


def _dvc_ancestor() -> str | None:
    """``<pid>-<start ticks>`` of the ``dvc`` process that started this stage (Linux), else None."""
    pid = os.getppid()
    for _ in range(8):
        found = _process(pid)
        if found is None or pid <= 1:
            return None
        parent, started, cmdline = found
        words = cmdline.split()
        if any(Path(word).name == "dvc" for word in words[:3]):  # dvc, python dvc, python -m dvc
            return f"{pid}-{started}"
        pid = parent
    return None


def pipeline_run_id() -> str | None:
    """An id shared by the stage runs of one pipeline run, so the MLflow UI can group them.

    ``$MURA_PIPELINE_RUN_ID`` when set (the Kubeflow pipeline sets it to its run id); during
    ``dvc exp run`` the experiment's name; under ``dvc repro`` a hash of the ``dvc`` process
    (its pid and start time: one value per ``dvc repro``); None for a stage started by hand.
    """
    if run_id := runtime_settings().pipeline_run_id:
        return run_id
    if os.environ.get(DVC_EXP_NAME):
        return f"dvc-exp-{os.environ[DVC_EXP_NAME]}"
    ancestor = _dvc_ancestor()
    if ancestor is None:
        return None
    return "dvc-repro-" + hashlib.sha256(f"{socket.gethostname()}:{ancestor}".encode()).hexdigest()[:12]


# How each split is used, in MLflow's dataset-input vocabulary (the runs table's Dataset column).
SPLIT_CONTEXTS = {"train": "training", "valid": "validation", "test": "test"}
DATASET_COLUMNS = ["image_id", "dataset", "body_part", "patient_id", "study_id", "label"]


def split_datasets(
    images_csv: str | Path, split_csv: str | Path, splits: Sequence[str], fingerprint: str | None = None
) -> list[tuple[Any, str]]:
    """MLflow datasets, one per split, with the context each is used in (``training``, ...).

    Name: the datasets and the split (``synthetic-mura+fracture/train`` for phantoms, so
    synthetic data is never mistaken for a clinical set); digest: the first 32 hex digits
    of :func:`dataset_fingerprint` (MLflow stores at most 36 characters; the whole
    fingerprint is the runs' ``dataset_fingerprint`` tag); source: the DVC-tracked
    ``images.csv``; schema and row count from the split's rows.
    """
    from mlflow.data.pandas_dataset import from_pandas  # lazy: heavy (~1 s): only when talking to the tracking store

    images = pd.read_csv(images_csv)
    split = pd.read_csv(split_csv, usecols=["image_id", "split"])
    rows = images.merge(split, on="image_id", how="inner")
    digest = (fingerprint or dataset_fingerprint(images_csv, split_csv))[:32]
    synthetic = "synthetic" in images and bool(images["synthetic"].any())
    names = "+".join(sorted(rows["dataset"].astype(str).unique())) if "dataset" in rows else "images"
    prefix = "synthetic-" if synthetic else ""
    source = Path(images_csv).resolve().as_uri()
    out = []
    for name in splits:
        part = rows.loc[rows["split"] == name, [c for c in DATASET_COLUMNS if c in rows]].reset_index(drop=True)
        with warnings.catch_warnings():  # MLflow registers two equal resolvers for file: URIs and says so
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")  # a record, not an input
            targets = "label" if "label" in part else None
            dataset = from_pandas(part, source=source, name=f"{prefix}{names}/{name}", digest=digest, targets=targets)
        out.append((dataset, SPLIT_CONTEXTS.get(name, name)))
    return out


def log_datasets(images_csv: str | Path, split_csv: str | Path, splits: Sequence[str], fingerprint: str | None = None) -> None:
    """Log each of ``splits`` as a dataset input of the active MLflow run (:func:`split_datasets`).

    ``fingerprint``: :func:`dataset_fingerprint` of the two files when the caller has it already.
    """
    import mlflow  # lazy: heavy (~1 s): only when talking to the tracking store

    for dataset, context in split_datasets(images_csv, split_csv, splits, fingerprint):
        mlflow.log_input(dataset, context=context)


def dataset_fingerprint(*files: str | Path) -> str:
    """SHA-256 over the given files' bytes (images.csv + split.csv identify the data)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Provenance:
    """Where a stage's results come from: the data (synthetic or not, fingerprint) and the code (commit)."""

    synthetic: bool  # any image of the listing is a synthetic phantom
    fingerprint: str  # SHA-256 of images.csv + split.csv: the data and its split
    git_commit: str


def dataset_provenance(images_csv: str | Path, split_csv: str | Path) -> Provenance:
    """The provenance every stage after ``split`` records (train, evaluate, register): computed here only."""
    synthetic = bool(pd.read_csv(images_csv, usecols=["synthetic"])["synthetic"].any())
    return Provenance(synthetic, dataset_fingerprint(images_csv, split_csv), git_commit())


def git_commit() -> str:
    """``$MURA_GIT_COMMIT``, else ``git rev-parse HEAD``, else ``unknown``."""
    if commit := runtime_settings().git_commit:
        return commit
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

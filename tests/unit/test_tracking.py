"""Tracking helpers: server detection, redaction and the one-line failure messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from mura.tracking import is_server, redact, server_errors, tracking_failure


def test_is_server() -> None:
    assert is_server("http://127.0.0.1:5050") and is_server("HTTPS://mlflow.example.org")
    assert not is_server("sqlite:///mlflow.db") and not is_server("file:///tmp/mlruns") and not is_server("/tmp/mlruns")


def test_redact_drops_credentials_from_uris() -> None:
    assert redact("http://alice:s3cret@host:5000/path") == "http://host:5000/path"
    assert redact("http://host:5000") == "http://host:5000"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            "API request failed with error code 401 != 200. You are not authenticated",
            "refused the credentials of user 'bob' (HTTP 401)",
        ),
        ("error code 403 != 200. Permission denied", "user 'bob' lacks the permission for doing x (HTTP 403)"),
        ("Max retries exceeded with url: /api/2.0 (Caused by NewConnectionError: Connection refused)", "is unreachable"),
        ("something else\nsecond line", "failed while doing x: something else"),
    ],
)
def test_tracking_failure_is_one_line_naming_the_server(monkeypatch: pytest.MonkeyPatch, error: str, expected: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-secret")
    message = str(tracking_failure(RuntimeError(error), "http://bob:hunter2-secret@srv:5050", "doing x"))
    assert message.startswith("MLflow tracking server http://srv:5050") and expected in message
    assert "\n" not in message and "hunter2" not in message


def test_server_errors_only_rewrites_server_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    from mura.errors import TrackingError

    with pytest.raises(TrackingError, match="is unreachable"), server_errors("x", "http://srv:1"):
        raise ConnectionError("Connection refused")
    with pytest.raises(ConnectionError), server_errors("x", "sqlite:///m.db"):  # a local store's error stays itself
        raise ConnectionError("Connection refused")


def test_runs_started_under_mlflow_run_are_children_not_the_launchers_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from mura.tracking import setup_mlflow, source_tags

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("MURA_PARENT_RUN_ID", raising=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    launcher = mlflow.MlflowClient().create_run(mlflow.create_experiment("launcher")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", launcher)  # what `mlflow run` gives its command
    setup_mlflow()
    with mlflow.start_run(tags=source_tags()) as run:
        mlflow.log_param("a", 1)
    assert run.info.run_id != launcher
    assert mlflow.get_run(run.info.run_id).data.tags["mlflow.parentRunId"] == launcher

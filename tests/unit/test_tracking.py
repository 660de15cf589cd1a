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


def test_runs_url_opens_the_runs_table_in_model_training_mode() -> None:
    from mura.deploy.mlflow_ui import runs_url

    assert runs_url("http://127.0.0.1:5001/", "7") == "http://127.0.0.1:5001/#/experiments/7/runs?workflowType=machine_learning"
    assert runs_url("http://h:1", None) == "http://h:1/#/experiments?workflowType=machine_learning"


def test_source_tags_name_the_dvc_experiment_and_pipeline_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from mura.tracking import pipeline_run_id, source_tags

    monkeypatch.setenv("MURA_GIT_COMMIT", "abc")
    for key in ("MURA_PIPELINE_RUN_ID", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV", "MURA_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    assert pipeline_run_id() is None  # pytest has no dvc ancestor
    assert "mura.pipeline_run" not in source_tags() and "dvc.exp_name" not in source_tags()
    monkeypatch.setenv("DVC_EXP_NAME", "lean-wren")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "f" * 40)
    tags = source_tags()
    assert tags["dvc.exp_name"] == "lean-wren" and tags["dvc.exp_baseline_rev"] == "f" * 40
    assert tags["mura.pipeline_run"] == "dvc-exp-lean-wren"
    monkeypatch.setenv("MURA_PIPELINE_RUN_ID", "kfp-run-42")  # set by the Kubeflow pipeline: wins
    assert source_tags()["mura.pipeline_run"] == "kfp-run-42"


def test_pipeline_run_id_is_shared_within_one_dvc_process_and_differs_between_two(tmp_path: Path) -> None:
    """Stages started by one `dvc` process (a script named dvc here) share the id; the next run gets another."""
    import os
    import subprocess
    import sys

    fake = tmp_path / "bin" / "dvc"
    fake.parent.mkdir()
    probe = f"{sys.executable} -c 'from mura.tracking import pipeline_run_id; print(pipeline_run_id())'"
    fake.write_text(f"#!/bin/sh\n{probe}\n{probe}\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MURA_PIPELINE_RUN_ID", "DVC_EXP_NAME")}

    def run() -> list[str]:
        out = subprocess.run([str(fake)], capture_output=True, text=True, env=env, check=True)
        return out.stdout.split()

    first, second = run(), run()
    assert len(first) == 2 and first[0] == first[1] and first[0].startswith("dvc-repro-")
    assert second[0] == second[1] and second[0] != first[0]


def test_split_datasets_name_digest_source_and_context(tmp_path: Path) -> None:
    import pandas as pd

    from mura.tracking import dataset_fingerprint, split_datasets

    images = pd.DataFrame(
        {
            "image_id": ["a", "b", "c", "d"],
            "dataset": ["mura", "mura", "fracture", "mura"],
            "body_part": ["XR_WRIST"] * 4,
            "patient_id": ["p1", "p1", "p2", "p3"],
            "study_id": ["s1", "s1", "s2", "s3"],
            "label": [1, 1, 0, 0],
            "path": ["x"] * 4,
            "synthetic": [True] * 4,
        }
    )
    images.to_csv(tmp_path / "images.csv", index=False)
    pd.DataFrame({"image_id": ["a", "b", "c", "d"], "split": ["train", "train", "valid", "test"]}).to_csv(
        tmp_path / "split.csv", index=False
    )
    found = split_datasets(tmp_path / "images.csv", tmp_path / "split.csv", ("train", "valid", "test"))
    digest = dataset_fingerprint(tmp_path / "images.csv", tmp_path / "split.csv")[:32]
    assert [(d.name, context) for d, context in found] == [
        ("synthetic-fracture+mura/train", "training"),
        ("synthetic-fracture+mura/valid", "validation"),
        ("synthetic-fracture+mura/test", "test"),
    ]
    assert all(d.digest == digest for d, _ in found)
    assert [len(d.df) for d, _ in found] == [2, 1, 1]
    assert "path" not in found[0][0].df.columns  # schema of what identifies an image, not where it lies
    assert found[0][0].source.to_dict()["uri"] == (tmp_path / "images.csv").resolve().as_uri()
    images.assign(synthetic=False).to_csv(tmp_path / "images.csv", index=False)
    real = split_datasets(tmp_path / "images.csv", tmp_path / "split.csv", ("train",))
    assert real[0][0].name == "fracture+mura/train"

"""The ``serve`` stage against a real ``mlflow models serve``: the registered version answers as registered, and a
corrupted served artifact fails the stage with one line and leaves no server behind."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from mura.config import ServeParams
from mura.errors import DataError
from mura.packaging.serve import ServeCheckError, ServePaths, run_serve
from mura.packaging.serve_reference import ServeReference

pytestmark = pytest.mark.slow


def _paths(registered: dict[str, Any], tmp_path: Path, record: dict[str, Any]) -> ServePaths:
    (tmp_path / "register.json").write_text(json.dumps(record))
    ws = registered["ws"]
    return ServePaths(
        register=tmp_path / "register.json", images=ws / "images.csv", pixels=ws / "pixels.npy", out=tmp_path / "serve.json"
    )


def _serve_processes(port: int) -> list[str]:
    """Command lines of live processes serving on ``port`` (an MLflow scoring server or its uvicorn)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(port) in cmdline and ("mlflow" in cmdline or "uvicorn" in cmdline):
                found.append(cmdline)
    return found


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def store(registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    monkeypatch.chdir(registered["ws"])
    return registered


def test_the_registered_version_serves_and_answers_as_registered(store: dict[str, Any], tmp_path: Path) -> None:
    from mura.deploy.processes import free_port

    record = store["second"]
    reference = ServeReference.from_dict(record["serve_reference"])
    port = free_port()
    result = run_serve(ServeParams(port=port, warm_requests=3), _paths(store, tmp_path, record))
    assert result["model_uri"] == "models:/mura-ensemble/2" and result["version"] == 2 and not result["skipped"]
    check = result["answer_check"]
    assert check["ok"] and check["views"] == len(reference.image_ids) and check["abs_difference"] <= reference.tolerance
    assert all(v["served"] == v["reference"] for v in check["labels"].values())
    assert 0 < result["startup_s"] < 300 and 0 < result["p50_ms"] <= result["p95_ms"] and result["warm_requests"] == 3
    assert not _listening(port) and not _serve_processes(port)  # stopped with its process group


def test_a_corrupted_served_artifact_fails_the_stage_in_one_line_and_stops_the_server(
    store: dict[str, Any], tmp_path: Path
) -> None:
    import mlflow

    from mura.deploy.processes import free_port
    from mura.runtime.served_config import CONFIG_ARTIFACT

    record = store["second"]
    reference = ServeReference.from_dict(record["serve_reference"])
    client = mlflow.MlflowClient(tracking_uri=store["uri"])
    source = client.get_model_version("mura-ensemble", "2").source
    assert source is not None
    location = client.get_logged_model(source.removeprefix("models:/")).artifact_location
    config_file = Path(location.removeprefix("file://")) / "artifacts" / f"{CONFIG_ARTIFACT}.json"
    original = config_file.read_text()
    config = json.loads(original)
    # The served calibration now maps every probability to the far end from the reference's.
    end = 0.0 if reference.study_probability >= 0.5 else 1.0
    config["calibration"] = {"method": "isotonic", "temperature": 1.0, "knots_x": [0.0, 1.0], "knots_y": [end, end]}
    config_file.write_text(json.dumps(config))
    port = free_port()
    try:
        with pytest.raises(ServeCheckError) as failure:
            run_serve(ServeParams(port=port, warm_requests=1), _paths(store, tmp_path, record))
    finally:
        config_file.write_text(original)
    message = str(failure.value)
    assert "\n" not in message and "does not answer as registered" in message and "models:/mura-ensemble/2" in message
    assert f"{end:.4f}" in message
    assert not _listening(port) and not _serve_processes(port)
    assert not (tmp_path / "serve.json").exists()


def test_serve_disabled_records_the_skip_without_starting_anything(store: dict[str, Any], tmp_path: Path) -> None:
    result = run_serve(ServeParams(enabled=False), _paths(store, tmp_path, store["first"]))
    assert result == {"model_name": "mura-ensemble", "version": 1, "model_uri": "models:/mura-ensemble/1", "skipped": True}


def test_a_record_without_a_reference_study_is_one_line(store: dict[str, Any], tmp_path: Path) -> None:
    record = {k: v for k, v in store["first"].items() if k != "serve_reference"}
    with pytest.raises(DataError, match=r"no serve_reference .* rerun `dvc repro register`"):
        run_serve(ServeParams(), _paths(store, tmp_path, record))
    assert os.environ["MLFLOW_TRACKING_URI"] == store["uri"]

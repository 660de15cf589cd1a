"""The registered ``mura-ensemble``: saved and reloaded from a temporary MLflow store, then served on
127.0.0.1 (PNG, DICOM and every bad input) by a real ``mlflow models serve`` and by ``mura serve-model``
(MLflow's scoring app plus /metrics): the same contract tests run against both."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.dicom_utils import PATIENT_ID, PATIENT_NAME, make_dicom
from tests.helpers import png_bytes as _png

pytestmark = pytest.mark.slow


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_versions_aliases_and_tags(registered: dict[str, Any]) -> None:
    import mlflow

    assert registered["first"]["version"] == 1 and registered["first"]["champion"] is True
    assert registered["second"]["version"] == 2 and registered["second"]["champion"] is False
    client = mlflow.MlflowClient(tracking_uri=registered["uri"])
    assert str(client.get_model_version_by_alias("mura-ensemble", "champion").version) == "1"
    tags = client.get_model_version("mura-ensemble", "1").tags
    assert tags["synthetic_data"] == "true" and len(tags["dataset_fingerprint"]) == 64 and "git_commit" in tags
    # The MLflow UI opens the experiment on its runs table, not the GenAI view.
    experiment = client.get_experiment_by_name("mura")
    assert experiment is not None and experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_alias_moved_during_the_load_names_the_version_that_was_loaded(
    registered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``models:/…@champion`` is resolved once: a promotion during a (re)start cannot make the answers name another version."""
    import mlflow

    from mura.runtime.predictor import load_served_model

    client = mlflow.MlflowClient(tracking_uri=registered["uri"])
    download = mlflow.artifacts.download_artifacts
    loaded: list[str] = []

    def download_during_a_promotion(*args: Any, **kwargs: Any) -> str:
        client.set_registered_model_alias("mura-ensemble", "champion", "2")  # moved before the download ...
        local = download(*args, **kwargs)
        loaded.append(local)
        client.set_registered_model_alias("mura-ensemble", "champion", "2")  # ... and still there after it
        return local

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download_during_a_promotion)
    try:
        model, version = load_served_model("models:/mura-ensemble@champion", registered["uri"], {"warm_up": False})
    finally:
        client.set_registered_model_alias("mura-ensemble", "champion", "1")
    assert version == "1"  # the version the alias named when the load began ...
    assert model.metadata.run_id == client.get_model_version("mura-ensemble", "1").run_id  # ... is the one loaded
    assert model.metadata.run_id != client.get_model_version("mura-ensemble", "2").run_id and len(loaded) == 1


def test_pyfunc_reloads_and_predicts(registered: dict[str, Any]) -> None:
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model("models:/mura-ensemble@champion")
    rng = np.random.default_rng(3)
    images = [_b64(_png(rng.integers(0, 256, (40, 30)).astype(np.uint8))) for _ in range(3)]
    out = model.predict(pd.DataFrame({"image": images, "study_id": ["s1", "s1", "s2"]}))
    assert list(out["row"]) == [0, 1, 2]
    np.testing.assert_allclose(out["probability"], (out["p_tiny_a"] + out["p_tiny_b"]) / 2, atol=1e-9)
    s1 = out[out["study_id"] == "s1"]
    assert s1["study_probability"].iloc[0] == pytest.approx(s1["probability"].mean())
    assert set(out["study_label"]) <= {"normal", "abnormal"} and (out["threshold"] == 0.5).all()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SERVERS = {
    "mlflow": ["mlflow", "models", "serve", "-m", "models:/mura-ensemble/1", "--env-manager", "local", "-h", "127.0.0.1", "-p"],
    "mura": [sys.executable, "-m", "mura.cli", "--log-format", "json", "serve-model", "-m", "models:/mura-ensemble/1", "-p"],
}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(registered: dict[str, Any], request: pytest.FixtureRequest):
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"], MLFLOW_DISABLE_TELEMETRY="true")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(registered["ws"] / f"serve-{request.param}.log", "w")
    audit = registered["ws"] / f"audit-{request.param}"
    extra = ["--audit-dir", str(audit)] if request.param == "mura" else []
    proc = subprocess.Popen(
        [*SERVERS[request.param], str(port), *extra],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=registered["ws"],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(
            f"{request.param} server did not start: " + (registered["ws"] / f"serve-{request.param}.log").read_text()[-2000:]
        )
    yield {"url": url, "log": registered["ws"] / f"serve-{request.param}.log", "kind": request.param, "audit": audit}
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    log.close()


def _post(url: str, payload: Any) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def test_http_png_and_dicom(server: dict[str, Any]) -> None:
    ramp = np.tile(np.linspace(0, 4095, 48).astype(np.uint16), (40, 1))
    png = _png(np.random.default_rng(1).integers(0, 256, (50, 40)).astype(np.uint8))
    status, body = _post(
        server["url"],
        {
            "dataframe_records": [
                {"image": _b64(png), "study_id": "a"},
                {"image": _b64(make_dicom(ramp, monochrome1=True)), "study_id": "a"},
            ]
        },
    )
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == 2 and {"probability", "p_tiny_a", "p_tiny_b", "study_probability", "study_label"} <= set(rows[0])
    assert [r["warnings"] for r in rows] == ["", ""]  # a CR wrist and a PNG: in scope
    text = json.dumps(body) + server["log"].read_text()
    assert PATIENT_NAME not in text and PATIENT_ID not in text


def test_http_boxes_are_an_optional_field_asked_for_with_params(server: dict[str, Any]) -> None:
    """params {"boxes": true} adds each image's boxes in its own pixels; the rest of the answer is what it always is."""
    rng = np.random.default_rng(4)
    records = [{"image": _b64(_png(rng.integers(0, 256, (50, 40)).astype(np.uint8))), "study_id": "a"} for _ in range(2)]
    status, plain = _post(server["url"], {"dataframe_records": records})
    assert status == 200 and all(row.get("boxes") is None for row in plain["predictions"])
    status, asked = _post(server["url"], {"dataframe_records": records, "params": {"boxes": True}})
    assert status == 200, asked
    for row, before in zip(asked["predictions"], plain["predictions"], strict=True):
        assert {k: v for k, v in row.items() if k != "boxes"} == pytest.approx(before)
        boxes = json.loads(row["boxes"])
        assert set(boxes) == {"high_sensitivity"}  # the fixture's thresholds: no high-specificity point
        assert (len(boxes["high_sensitivity"]) > 0) == (row["study_probability"] >= 0.3)
        for box in boxes["high_sensitivity"]:
            assert 0 <= box["x0"] < box["x1"] <= 40 and 0 <= box["y0"] < box["y1"] <= 50  # the 40x50 image's pixels


def test_http_out_of_scope_dicom_is_scored_and_flagged(server: dict[str, Any]) -> None:
    knee = make_dicom(np.tile(np.linspace(0, 4095, 48).astype(np.uint16), (40, 1)), body_part="KNEE")
    status, body = _post(server["url"], {"dataframe_records": [{"image": _b64(knee)}]})
    assert status == 200, body
    row = body["predictions"][0]
    assert 0.0 <= row["probability"] <= 1.0
    assert row["warnings"].startswith("body part KNEE is outside the seven upper-extremity regions")
    assert PATIENT_NAME not in json.dumps(body) and PATIENT_ID not in server["log"].read_text()


def test_http_unsupported_transfer_syntax_is_a_4xx_naming_it(server: dict[str, Any]) -> None:
    import io

    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    ds = pydicom.dcmread(io.BytesIO(make_dicom(np.zeros((8, 8), np.uint16))))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    status, body = _post(server["url"], {"dataframe_records": [{"image": _b64(buffer.getvalue())}]})
    assert status == 400
    assert "row 0: unsupported transfer syntax: transfer syntax 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile" in body["message"]


BAD = [
    ({"dataframe_records": [{"image": "***"}]}, "row 0: 'image' is not valid base64"),
    ({"dataframe_records": [{"image": _b64(b"\x89PNG\r\n\x1a\n" + b"x" * 30)}]}, "row 0:"),
    ({"dataframe_records": [{"image": _b64(b"plain text, no image")}]}, "row 0: undecodable"),
    (
        {
            "dataframe_records": [
                {"image": _b64(_png(np.zeros((64, 64), np.uint8)))},
                {"image": _b64(_png(np.zeros((1200, 1000), np.uint8)))},
            ]
        },
        "row 1: too large",
    ),
    ({"dataframe_records": [{"image": _b64(make_dicom(np.zeros((4, 4)), with_pixels=False))}]}, "row 0: no pixel data"),
    ({"dataframe_records": []}, "image"),
    ({"dataframe_records": [{"picture": "abc"}]}, "image"),
    ({"dataframe_records": [{"image": 12}]}, "row 0"),
    (b"{not json", ""),
]


@pytest.mark.parametrize(
    "payload,message",
    BAD,
    ids=[
        "base64",
        "truncated",
        "not-image",
        "bomb",
        "dicom-no-pixels",
        "empty",
        "missing-column",
        "wrong-type",
        "malformed-json",
    ],
)
def test_http_bad_input_is_a_4xx_one_line_error(server: dict[str, Any], payload: Any, message: str) -> None:
    status, body = _post(server["url"], payload)
    assert 400 <= status < 500, body
    assert message in body.get("message", "")
    assert "Traceback" not in json.dumps(body) and "stack_trace" not in body
    ok, _ = _post(server["url"], {"dataframe_records": [{"image": _b64(_png(np.zeros((20, 20), np.uint8)))}]})
    assert ok == 200  # still serving


def test_mura_serve_model_adds_metrics_to_the_same_contract(server: dict[str, Any]) -> None:
    if server["kind"] != "mura":
        pytest.skip("mlflow models serve has no /metrics (the reason mura serve-model exists)")
    for path in ("/ping", "/health", "/version"):
        with urllib.request.urlopen(server["url"] + path, timeout=10) as response:
            assert response.status == 200
    ok, body = _post(server["url"], {"dataframe_records": [{"image": _b64(_png(np.zeros((20, 20), np.uint8))), "study_id": "a"}]})
    assert ok == 200 and body["predictions"][0]["study_id"] == "a"
    bad, _ = _post(server["url"], {"dataframe_records": [{"image": "not base64!"}]})
    assert bad == 400
    with urllib.request.urlopen(server["url"] + "/metrics", timeout=10) as response:
        text = response.read().decode()
    answered = [
        line for line in text.splitlines() if line.startswith('mura_studies_total{entry_point="model-server",outcome="answered"')
    ]
    refused = [
        line for line in text.splitlines() if line.startswith('mura_studies_total{entry_point="model-server",outcome="refused"')
    ]
    assert answered and float(answered[0].split()[-1]) >= 1 and refused and float(refused[0].split()[-1]) >= 1
    assert "mura_model_info{" in text and 'version="1"' in text


def test_mura_serve_model_audits_each_study_and_logs_json_with_request_ids(server: dict[str, Any]) -> None:
    if server["kind"] != "mura":
        pytest.skip("mlflow models serve keeps no audit trail (mura serve-model does)")
    trail = server["audit"] / "audit.jsonl"
    before = trail.read_text().splitlines() if trail.exists() else []
    rng = np.random.default_rng(5)
    rows = [{"image": _b64(_png(rng.integers(0, 256, (30, 30)).astype(np.uint8))), "study_id": s} for s in ("x", "x", "y")]
    request = urllib.request.Request(
        f"{server['url']}/invocations",
        data=json.dumps({"dataframe_records": rows}).encode(),
        headers={"Content-Type": "application/json", "X-Request-ID": "req-audit-1"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200 and response.headers["X-Request-ID"] == "req-audit-1"
        served = json.loads(response.read())["predictions"]
    records = [json.loads(line) for line in trail.read_text().splitlines()[len(before) :]]
    assert [len(r["views"]) for r in records] == [2, 1]  # one record per study of the request, its views in it
    x = next(p for p in served if p["study_id"] == "x")
    assert records[0]["probability"] == pytest.approx(x["study_probability"], abs=1e-6)
    assert {r["entry_point"] for r in records} == {"model-server"} and records[0]["model"]["version"] == "1"
    assert records[0]["views"][0]["height"] == 30 and records[0]["study_key"] != records[1]["study_key"]
    assert "x" not in {records[0]["study_key"], records[1]["study_key"]}  # keyed hashes of the images, not the client's id
    # Structured logs: every line JSON; the request's lines carry its id.
    lines = [json.loads(line) for line in server["log"].read_text().splitlines() if line.startswith("{")]
    assert any(line.get("request_id") == "req-audit-1" and line["logger"] == "uvicorn.access" for line in lines)

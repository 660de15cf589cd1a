"""Python API, CLI and web API (FastAPI TestClient) against a registered tiny ensemble."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.dicom_utils import PATIENT_NAME, make_dicom
from tests.helpers import png_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def predictor(registered: dict[str, Any]):
    from mura.api import Predictor

    return Predictor.load("models:/mura-ensemble@champion", tracking_uri=registered["uri"])


def _views(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [png_bytes(rng.integers(0, 256, (60 + 7 * i, 48)).astype(np.uint8)) for i in range(n)]


def test_predict_study_shapes_and_consistency_with_served_model(predictor, registered: dict[str, Any]) -> None:
    import mlflow

    views = _views(3)
    result = predictor.predict_study(views, heatmaps=True)
    assert len(result.views) == 3 and set(result.variants) == {"tiny_a", "tiny_b"}
    assert result.label in ("normal", "abnormal") and set(result.labels) == {"default", "high_sensitivity"}
    assert result.probability == pytest.approx(np.mean([v.probability for v in result.views]), abs=1e-12)
    assert result.synthetic_data is True
    for view in result.views:
        assert set(view.heatmaps) == {"tiny_a", "tiny_b", "ensemble"}
        for heat in view.heatmaps.values():
            assert heat.shape == (32, 32) and heat.min() >= 0.0 and heat.max() <= 1.0
        np.testing.assert_allclose(view.heatmaps["ensemble"], (view.heatmaps["tiny_a"] + view.heatmaps["tiny_b"]) / 2, atol=1e-6)
    # Same numbers as the pyfunc that `mlflow models serve` runs.
    mlflow.set_tracking_uri(registered["uri"])
    served = mlflow.pyfunc.load_model("models:/mura-ensemble@champion").predict(
        pd.DataFrame({"image": [base64.b64encode(v).decode() for v in views]})
    )
    plain = predictor.predict_study(views)  # without heatmaps: the served precision, as the pyfunc
    np.testing.assert_allclose(served["probability"], [v.probability for v in plain.views], atol=1e-6)
    assert served["study_probability"].iloc[0] == pytest.approx(plain.probability, abs=1e-6)
    # With heatmaps the served precision still answers (the float32 pass only draws the maps).
    assert result.probability == pytest.approx(plain.probability, abs=1e-6)


def test_predict_study_inputs(predictor, tmp_path: Path) -> None:
    path = tmp_path / "view.png"
    path.write_bytes(_views(1)[0])
    array = np.random.default_rng(1).integers(0, 256, (50, 40)).astype(np.uint8)
    dicom = make_dicom(np.tile(np.arange(40, dtype=np.uint16) * 100, (30, 1)), body_part="ELBOW")
    result = predictor.predict_study([path, array, dicom])
    assert [v.kind for v in result.views] == ["png", "array", "dicom"]
    assert result.body_part == "XR_ELBOW"  # normalized to MURA's names
    assert PATIENT_NAME not in json.dumps(result.to_dict())
    with pytest.raises(ValueError, match="view 2"):
        predictor.predict_study([path, b"not an image"])
    with pytest.raises(ValueError, match="at least one view"):
        predictor.predict_study([])


def _cli(args: list[str], registered: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=registered["uri"])
    return subprocess.run([sys.executable, "-m", "mura.cli", *args], env=env, capture_output=True, text=True, timeout=300)


def test_cli_predict_json_and_heatmaps(registered: dict[str, Any], tmp_path: Path) -> None:
    study = tmp_path / "study1_positive"
    study.mkdir()
    for i, data in enumerate(_views(2), 1):
        (study / f"image{i}.png").write_bytes(data)
    (study / "._image1.png").write_bytes(b"junk")
    proc = _cli(
        ["predict", str(study), "--model", "models:/mura-ensemble/1", "--json", "--heatmaps", str(tmp_path / "hm")], registered
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = json.loads(proc.stdout)
    assert [v["name"] for v in body["views"]] == ["image1.png", "image2.png"]
    assert len(list((tmp_path / "hm").glob("*.png"))) == 2 * 3
    table = _cli(["predict", str(study / "image1.png"), "--model", "models:/mura-ensemble/1"], registered)
    assert "study:" in table.stdout and "SYNTHETIC" in table.stdout and "not a diagnosis" in table.stdout
    missing = _cli(["predict", str(tmp_path / "nope.png")], registered)
    assert missing.returncode == 2 and missing.stderr.strip().splitlines()[-1].startswith("error: no such file")


@pytest.mark.parametrize("command", ["synth", "workspace", "predict", "serve-ui"])
def test_cli_help(command: str, registered: dict[str, Any]) -> None:
    proc = _cli([command, "--help"], registered)
    assert proc.returncode == 0 and "usage: mura " + command in proc.stdout


@pytest.fixture(scope="module")
def client(predictor):
    from fastapi.testclient import TestClient

    from mura.apps.web import WebSettings, create_app

    return TestClient(create_app(WebSettings(max_file_bytes=200_000, max_files=3), predictor=predictor))


def _close_boxes(a: dict[str, Any], b: dict[str, Any], tol: float = 0.05) -> bool:
    """The same boxes up to the rounding of one view against a batch's heatmap."""
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(abs(x[c] - y[c]) <= tol for x, y in zip(a[k], b[k], strict=True) for c in x) for k in a
    )


def test_web_predict(client) -> None:
    files = [("files", (f"v{i}.png", data, "image/png")) for i, data in enumerate(_views(2))]
    response = client.post("/api/predict", files=files, data={"body_part": "wrist"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["verdict"] in ("normal", "abnormal") and body["body_part"] == "XR_WRIST"
    assert len(body["views"]) == 2 and body["synthetic_data"] is True
    # By default the heatmaps are drawn when asked: a URL per view, a PNG there, the same image twice (kept).
    assert all(v["heatmap"] is None for v in body["views"])
    first = client.get(body["views"][0]["heatmap_url"])
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content.startswith(b"\x89PNG") and client.get(body["views"][0]["heatmap_url"]).content == first.content
    assert client.get(body["views"][0]["heatmap_url"].rsplit("/", 1)[0] + "/7").status_code == 404
    assert "no longer kept" in client.get("/api/heatmap/not-a-token/0").json()["error"]
    # heatmaps=inline: drawn into the answer, the same overlay; heatmaps=none: none.
    inline = client.post("/api/predict", files=files, data={"body_part": "wrist", "heatmaps": "inline"}).json()
    drawn_inline = base64.b64decode(inline["views"][0]["heatmap"].removeprefix("data:image/png;base64,"))
    lazy_pixels, inline_pixels = (np.asarray(Image.open(io.BytesIO(png)), np.int16) for png in (first.content, drawn_inline))
    assert lazy_pixels.shape == inline_pixels.shape and np.abs(lazy_pixels - inline_pixels).max() <= 2  # one view vs a batch
    assert inline["probability"] == body["probability"] and inline["views"][0]["heatmap_url"] is None
    # Boxes, drawn with the heatmap: at boxes_url (lazy) or in the answer (inline), the same, as fractions of the view.
    lazy_boxes = client.get(body["views"][0]["boxes_url"]).json()["boxes"]
    assert lazy_boxes == inline["views"][0]["boxes"] or _close_boxes(lazy_boxes, inline["views"][0]["boxes"])
    assert set(lazy_boxes) == {"high_sensitivity"}  # the fixture's thresholds have no high-specificity point
    expected = 1 if inline["labels"]["high_sensitivity"] == "abnormal" else 0
    assert (len(lazy_boxes["high_sensitivity"]) >= 1) == bool(expected)
    for box in lazy_boxes["high_sensitivity"]:
        assert 0 <= box["x0"] < box["x1"] <= 1 and 0 <= box["y0"] < box["y1"] <= 1 and 0 <= box["score"] <= 1
    assert client.get("/api/boxes/not-a-token/0").status_code == 404
    bare = client.post("/api/predict", files=files, data={"heatmaps": "none"}).json()
    assert bare["views"][0]["heatmap"] is None and bare["views"][0]["heatmap_url"] is None
    assert bare["views"][0]["boxes"] is None
    refused = client.post("/api/predict", files=files, data={"heatmaps": "later"})
    assert refused.status_code == 400 and "heatmaps must be one of lazy, inline, none" in refused.json()["error"]
    info = client.get("/api/info").json()
    assert info["synthetic_data"] is True and info["heatmaps"] is True
    assert "pre-screening aid, not a diagnosis" in client.get("/").text.lower()


@pytest.mark.parametrize(
    "files,status,words",
    [
        ([("files", ("notes.png", b"just some text", "image/png"))], 415, "wrong file type"),
        ([("files", ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 300_000, "image/png"))], 413, "too large"),
        ([("files", ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 50, "image/png"))], 422, "view 1: the file is incomplete"),
        ([("files", (f"{i}.png", b"x", "image/png")) for i in range(4)], 413, "too many files"),
        ([("files", ("scan.dcm", make_dicom(np.zeros((4, 4)), with_pixels=False), "application/dicom"))], 422, "no image in it"),
    ],
    ids=["text-as-png", "too-large", "truncated", "too-many", "dicom-without-pixels"],
)
def test_web_errors_in_plain_words(client, files: list[Any], status: int, words: str) -> None:
    response = client.post("/api/predict", files=files)
    assert response.status_code == status and words in response.json()["error"]


def test_web_token(predictor) -> None:
    from fastapi.testclient import TestClient

    from mura.apps.web import WebSettings, create_app

    secured = TestClient(create_app(WebSettings(token="s3cret"), predictor=predictor))
    assert secured.get("/api/info").status_code == 401
    assert secured.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert secured.get("/").status_code == 200  # the page itself asks for the token


def test_lossless_encodings_get_the_same_probability(predictor) -> None:
    """One image in every lossless transfer syntax (pydicom's files): one probability, and the MR warning."""
    from pydicom.data import get_testdata_file

    from tests.unit.test_dicom import LOSSLESS

    results = {}
    for encoding, name in LOSSLESS.items():
        path = Path(name) if name.startswith("/") else Path(str(get_testdata_file(name)))
        results[encoding] = predictor.predict_study([path.read_bytes()])
    reference = results["explicit VR little endian"].probability
    for encoding, result in results.items():
        assert abs(result.probability - reference) <= 1e-6, encoding
        assert result.warnings == ["view1: modality MR is not a radiograph: the model was trained on radiographs only"]
        assert result.to_dict()["views"][0]["warnings"] == [result.views[0].warnings[0]]


def test_png_uploads_carry_no_warnings(predictor) -> None:
    result = predictor.predict_study(_views(2))
    assert result.warnings == [] and all(v.warnings == () for v in result.views)

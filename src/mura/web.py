"""The web interface: FastAPI app for uploading a study and seeing a pre-screening suggestion.

Serves one page (``webui/index.html``) and a JSON API. The model runs in-process
(``Predictor``) or is forwarded to a running ``mlflow models serve`` URL.
Uploaded files and DICOM tags are never written to disk or to the logs: they
live in memory for the duration of the request. Binds 127.0.0.1 by default.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at runtime.

import asyncio
import base64
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mura.dicom import is_dicom

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("webui") / "index.html"
BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")


@dataclass(frozen=True)
class WebSettings:
    """Settings of the web UI (from the ``mura serve-ui`` command line or the environment)."""

    model_uri: str = "models:/mura-ensemble@champion"
    tracking_uri: str | None = None
    forward_url: str | None = None  # a running `mlflow models serve` (no heatmaps then)
    token: str | None = None  # optional bearer token for deployments
    max_file_bytes: int = 20 * 1024 * 1024
    max_files: int = 8  # the pixel limit comes from the registered model (register.max_pixels)


def sniff_kind(data: bytes) -> str | None:
    """File type from content: ``png``, ``jpeg``, ``dicom`` or None (extensions are ignored)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if is_dicom(data):
        return "dicom"
    return None


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _thumbnail(gray: np.ndarray, side: int = 384) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(gray)
    image.thumbnail((side, side))
    return np.asarray(image)


def normalize_body_part(value: str | None) -> str | None:
    """``WRIST`` / ``wrist`` / ``XR_WRIST`` → ``XR_WRIST``; unknown parts pass through upper-cased."""
    if not value:
        return None
    upper = value.strip().upper().replace(" ", "_")
    return upper if upper.startswith("XR_") else f"XR_{upper}"


class ForwardingPredictor:
    """Sends studies to a running ``mlflow models serve`` and reads back its answer."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/") + "/invocations"
        self.timeout = timeout

    def predict(self, files: list[bytes]) -> dict[str, Any]:
        payload = {"dataframe_records": [{"image": base64.b64encode(f).decode(), "study_id": "study"} for f in files]}
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("message", "")
            raise ValueError(detail.split("Error: ")[-1] or f"model server answered {err.code}") from None


def create_app(settings: WebSettings, predictor: Any | None = None) -> Any:
    """Build the FastAPI app.

    Args:
        settings: UI settings.
        predictor: an already loaded :class:`mura.api.Predictor` (tests); loaded
            from ``settings.model_uri`` when None and not forwarding.
    """
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse

    from mura.api import Predictor

    if predictor is None and settings.forward_url is None:
        predictor = Predictor.load(settings.model_uri, settings.tracking_uri)
    forwarder = ForwardingPredictor(settings.forward_url) if settings.forward_url else None
    lock = asyncio.Lock()  # one study at a time through the model; requests queue
    app = FastAPI(title="mura pre-screening", docs_url=None, redoc_url=None)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    def authorized(request: Request) -> bool:
        if not settings.token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given, f"Bearer {settings.token}")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info")
    def info(request: Request) -> Any:
        if not authorized(request):
            return error(401, "a valid access token is required")
        config = predictor.config if predictor is not None else {}
        return {
            "model_uri": settings.model_uri if forwarder is None else settings.forward_url,
            "mode": "forward" if forwarder else "in-process",
            "synthetic_data": bool(config.get("synthetic_data", False)),
            "thresholds": config.get("thresholds", {}),
            "operating_point": config.get("operating_point", "default"),
            "variants": config.get("variants", []),
            "validation_per_body_part": config.get("validation_per_body_part", {}),
            "git_commit": config.get("git_commit"),
            "body_parts": list(BODY_PARTS),
            "heatmaps": forwarder is None,
            "token_required": bool(settings.token),
        }

    @app.post("/api/predict")
    async def predict(request: Request, files: list[UploadFile] = File(...), body_part: str = Form("")) -> Any:
        if not authorized(request):
            return error(401, "a valid access token is required")
        if not files:
            return error(400, "no file uploaded: add one or more views of one study")
        if len(files) > settings.max_files:
            return error(413, f"too many files: at most {settings.max_files} views per study")
        blobs: list[bytes] = []
        for index, upload in enumerate(files, 1):
            data = await upload.read(settings.max_file_bytes + 1)
            if len(data) > settings.max_file_bytes:
                return error(413, f"file {index} is too large (limit {settings.max_file_bytes // 2**20} MB)")
            if not data:
                return error(400, f"file {index} is empty")
            if sniff_kind(data) is None:
                return error(415, f"file {index} is not a PNG, JPEG or DICOM image (wrong file type)")
            blobs.append(data)
        try:
            async with lock:
                if forwarder is not None:
                    answer = await asyncio.to_thread(forwarder.predict, blobs)
                    return _forwarded(answer, body_part)
                result = await asyncio.to_thread(predictor.predict_study, blobs, normalize_body_part(body_part), True)
        except ValueError as exc:
            return error(422, _plain(str(exc)))
        return _present(result, predictor.config)

    return app


def _plain(message: str) -> str:
    """Turn decoder reasons into plain words for the page."""
    replacements = {"no pixel data": "this DICOM file has no image in it", "undecodable": "the file cannot be read as an image",
                    "truncated": "the file is incomplete (truncated)", "too large": "the image has too many pixels"}  # fmt: skip
    for key, words in replacements.items():
        if key in message:
            prefix = message.split(":")[0]
            return f"{prefix}: {words}"
    return message


def _present(result: Any, config: dict[str, Any]) -> dict[str, Any]:
    """The JSON the page renders: verdict, per-view thumbnails and overlays, per-variant breakdown."""
    from mura.gradcam import overlay, png_bytes

    views = []
    for view in result.views:
        thumb = _thumbnail(view.gray)
        entry = {"name": view.name, "kind": view.kind, "probability": view.probability, "variants": view.variants,
                 "image": _data_url(png_bytes(thumb))}  # fmt: skip
        if "ensemble" in view.heatmaps:
            entry["heatmap"] = _data_url(png_bytes(overlay(thumb, view.heatmaps["ensemble"])))
        views.append(entry)
    part = normalize_body_part(result.body_part)
    return {
        "verdict": result.label, "probability": result.probability, "operating_point": result.operating_point,
        "threshold": result.thresholds[result.operating_point], "labels": result.labels, "variants": result.variants,
        "views": views, "body_part": part, "synthetic_data": result.synthetic_data,
        "validation": config.get("validation_per_body_part", {}).get(part or "all")
        or config.get("validation_per_body_part", {}).get("all"),
    }  # fmt: skip


def _forwarded(answer: dict[str, Any], body_part: str) -> dict[str, Any]:
    rows = answer.get("predictions", [])
    if not rows:
        raise ValueError("the model server returned no prediction")
    variants = sorted(k[2:] for k in rows[0] if k.startswith("p_"))
    return {
        "verdict": rows[0]["study_label"], "probability": rows[0]["study_probability"], "operating_point": "registered",
        "threshold": rows[0]["threshold"], "variants": {v: float(np.mean([r[f"p_{v}"] for r in rows])) for v in variants},
        "views": [{"name": f"view {i + 1}", "kind": "image", "probability": r["probability"],
                   "variants": {v: r[f"p_{v}"] for v in variants}} for i, r in enumerate(rows)],  # fmt: skip
        "body_part": normalize_body_part(body_part), "synthetic_data": None, "validation": None,
    }  # fmt: skip


def serve(settings: WebSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn (access log keeps method and path only)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")

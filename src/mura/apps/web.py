"""The web interface: FastAPI app for uploading a study and seeing a pre-screening suggestion.

Serves one page (``webui/index.html``) and a JSON API. The model runs in-process
(``Predictor``) or is forwarded to a running ``mlflow models serve`` URL.

Heatmaps are drawn when asked: ``/api/predict`` answers with the probabilities (the served
precision's fast pass) and, per view, a ``heatmap_url`` that the page fetches when the user
shows the heatmaps (``heatmaps=inline`` puts them in the answer instead). For that, the decoded
views of the last answers stay in memory (never on disk) for at most ``WebSettings.heatmap_ttl_s``
seconds, behind an unguessable token. Uploaded files and DICOM tags are never written to disk or
to the logs. Binds 127.0.0.1 by default.

Feedback (``feedback_dir`` and ``reviewers_file`` set): every answer is recorded in the feedback
store (:mod:`mura.operations.feedback`: model version, operating point, probability, label, body
part, a keyed study key) and carries a ``feedback_url``; a reviewer, signed in with their own
token (:mod:`mura.operations.reviewers`), posts agree/disagree there, with their label, a region
and a reason. Only then are the study's views (8-bit pixels, no header, at most 512 px) written
to the store, for ``mura feedback export``; views never reviewed stay in memory only.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations at runtime.

import asyncio
import base64
import dataclasses
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from mura.apps.http import (
    add_metrics_route,
    add_request_ids,
    add_unauthorized_handler,
    bearer,
    error_response,
    redact_access_log,
    require_reviewer,
    require_token,
)
from mura.data.imaging import heat_on_image
from mura.data.sources import BODY_PARTS, normalize_body_part
from mura.data.uploads import sniff_kind
from mura.modeling.averaging import ENSEMBLE
from mura.modeling.boxes import study_boxes
from mura.modeling.gradcam import overlay, png_bytes
from mura.operations.feedback import (
    FeedbackStore,
    Region,
    Retention,
    answer_of,
    keepable_views,
)
from mura.operations.live_performance import open_feedback
from mura.operations.reviewers import ReviewerFile
from mura.operations.telemetry import AuditTrail, ServingMetrics
from mura.runtime.predictor import Predictor, StudyResult
from mura.runtime.schema import FeedbackRequest, ServedRow, StudyAnswer, ViewAnswer
from mura.runtime.served_config import ServingConfig

logger = logging.getLogger(__name__)

__all__ = ["ForwardingPredictor", "HeatmapCache", "WebSettings", "create_app", "serve"]

PAGE = Path(__file__).with_name("webui") / "index.html"
HEATMAP_MODES = ("lazy", "inline", "none")  # /api/predict's heatmaps field (see _answer)


@dataclass(frozen=True)
class WebSettings:
    """Settings of the web UI (from the ``mura serve-ui`` command line or the environment)."""

    model_uri: str = "models:/mura-ensemble@champion"
    tracking_uri: str | None = None
    forward_url: str | None = None  # a running `mlflow models serve` (no heatmaps then)
    token: str | None = None  # optional bearer token for deployments
    max_file_bytes: int = 20 * 1024 * 1024
    max_files: int = 8  # the pixel limit comes from the registered model (register.max_pixels)
    concurrency: int = 0  # studies analysed at once when the runtime allows it (0 = one per CPU core)
    audit_dir: Path | None = None  # one JSON line per answer (mura.operations.telemetry.AuditTrail); None: off
    heatmap_studies: int = 32  # answers whose views are kept for their heatmaps (oldest dropped first)
    heatmap_ttl_s: float = 600.0  # how long an answer's heatmaps can be asked for
    feedback_dir: Path | None = None  # the feedback store's folder (mura.operations.feedback); None: no feedback
    feedback_db: str | None = None  # its database URL (default SQLite in feedback_dir; postgresql://… in a team)
    feedback_retention: Retention = Retention()
    reviewers_file: Path | None = None  # reviewers' accounts (mura reviewers add NAME); their tokens also grant access

    def __post_init__(self) -> None:
        if self.feedback_dir is not None and self.reviewers_file is None:
            raise ValueError("feedback needs reviewers' accounts: give --reviewers FILE (mura reviewers add NAME)")


Drawn = tuple[bytes, dict[str, list[dict[str, float]]]]  # a view's overlay (PNG) and its boxes (fractions of the view)
KeptView = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # model pixels, thumbnail, the view as kept on review


@dataclass
class _Kept:
    time: float
    views: list[KeptView]
    probability: float
    drawn: dict[int, Drawn] = field(default_factory=dict)


class HeatmapCache:
    """The decoded views of the latest answers, kept so their heatmaps and boxes can be drawn when the page asks.

    Bounded by ``studies`` and ``ttl_s``; in memory only. Thread-safe. Each view's drawn overlay
    (PNG) and boxes are kept too, so showing the heatmaps twice computes them once.
    """

    def __init__(self, studies: int, ttl_s: float, clock: Any = time.monotonic) -> None:
        self.studies, self.ttl_s, self._clock = studies, ttl_s, clock
        self._entries: OrderedDict[str, _Kept] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, views: list[KeptView], probability: float = 0.0) -> str:
        """Keep one answer's views and its study probability (boxes depend on it); the token that names them."""
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._expire()
            self._entries[token] = _Kept(self._clock(), views, probability)
            while len(self._entries) > self.studies:
                self._entries.popitem(last=False)
        return token

    def get(self, token: str, index: int) -> tuple[np.ndarray, np.ndarray, float, Drawn | None] | None:
        """View ``index`` of the answer ``token``: pixels, thumbnail, study probability, and what was drawn; None when gone."""
        with self._lock:
            self._expire()
            entry = self._entries.get(token)
            if entry is None or not 0 <= index < len(entry.views):
                return None
            pixels, thumb, _ = entry.views[index]
            return pixels, thumb, entry.probability, entry.drawn.get(index)

    def cases(self, token: str) -> list[np.ndarray | None]:
        """The views of answer ``token`` as kept on review (empty when gone)."""
        with self._lock:
            self._expire()
            entry = self._entries.get(token)
            return [] if entry is None else [case for _, _, case in entry.views]

    def keep_drawn(self, token: str, index: int, drawn: Drawn) -> None:
        """Remember a view's drawn overlay and boxes (if its answer is still kept)."""
        with self._lock:
            if token in self._entries:
                self._entries[token].drawn[index] = drawn

    def _expire(self) -> None:
        oldest = self._clock() - self.ttl_s
        while self._entries and next(iter(self._entries.values())).time < oldest:
            self._entries.popitem(last=False)


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _thumbnail(gray: np.ndarray, side: int = 384) -> np.ndarray:

    image = Image.fromarray(gray)
    image.thumbnail((side, side))
    return np.asarray(image)


class ForwardingPredictor:
    """Sends studies to a running ``mlflow models serve`` and reads back its answer."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/") + "/invocations"
        self.timeout = timeout

    def predict(self, files: list[bytes]) -> dict[str, Any]:
        payload = {"dataframe_records": [{"image": base64.b64encode(f).decode(), "study_id": "study"} for f in files]}
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as err:
            detail = json.loads(err.read() or b"{}").get("message", "")
            raise ValueError(detail.split("Error: ")[-1] or f"model server answered {err.code}") from None


def create_app(settings: WebSettings, predictor: Any | None = None) -> Any:
    """Build the FastAPI app.

    Long on purpose: the routes are closures over one app's state (the model, the in-flight gate, the
    metrics, the heatmap cache); each handler is a few lines and the work is in this module's functions.

    Args:
        settings: UI settings.
        predictor: an already loaded :class:`mura.runtime.predictor.Predictor` (tests); loaded
            from ``settings.model_uri`` when None and not forwarding.
    """

    predictor, forwarder, in_flight = _model_for(settings, predictor)
    gate = asyncio.Semaphore(in_flight)
    logger.info("web UI: up to %d studies in flight", in_flight)
    metrics = ServingMetrics("web", predictor)
    audit = _audit_for(settings, predictor)
    store = _feedback_store(settings, predictor, metrics)
    who = _reviewer_lookup(settings)
    app = FastAPI(title="mura pre-screening", docs_url=None, redoc_url=None)
    app.state.metrics, app.state.audit, app.state.feedback = metrics, audit, store
    kept = HeatmapCache(settings.heatmap_studies, settings.heatmap_ttl_s)

    authorized = Depends(require_token(settings.token, also=who))
    add_unauthorized_handler(app)
    _add_gone_handler(app)
    add_request_ids(app)
    add_metrics_route(app, metrics.registry)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/healthz")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/info", dependencies=[authorized])
    def info(request: Request) -> Any:
        return _model_info(settings, predictor, forwarding=forwarder is not None) | _feedback_info(store, who(bearer(request)))

    @app.post("/api/predict", dependencies=[Depends(require_token(settings.token, lambda: metrics.refused("unauthorized"), who))])
    async def predict(
        files: Annotated[list[UploadFile], File()],
        body_part: Annotated[str, Form()] = "",
        heatmaps: Annotated[str, Form()] = "lazy",
    ) -> Any:
        try:
            blobs = await _read_uploads(files, heatmaps, settings)
        except _Refused as refusal:
            return _refuse(metrics, refusal.status, refusal.reason, str(refusal))
        try:
            with metrics.in_flight.labels("web").track_inprogress():
                async with gate:
                    if forwarder is not None:
                        answer = await asyncio.to_thread(forwarder.predict, blobs)
                        return _forwarded(answer, body_part)
                    assert predictor is not None  # loaded above unless forwarding
                    part = normalize_body_part(body_part)
                    # Decoding, inference, heatmaps and PNG encoding all run off the event loop.
                    return await asyncio.to_thread(_answer, predictor, blobs, part, metrics, audit, heatmaps, kept, store)
        except ValueError as exc:
            return _refuse(metrics, 422, "undecodable", _plain(str(exc)))

    @app.get("/api/heatmap/{token}/{index}", dependencies=[authorized])
    async def heatmap(token: str, index: int) -> Any:
        """The ensemble's Grad-CAM overlay of one view of a recent answer (PNG), drawn at the first ask."""
        png, _ = await _drawn(kept, predictor, gate, metrics, token, index)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=600"})

    @app.get("/api/boxes/{token}/{index}", dependencies=[authorized])
    async def boxes(token: str, index: int) -> Any:
        """One view's boxes at the two box operating points, as fractions of the view (drawn with its heatmap)."""
        _, found = await _drawn(kept, predictor, gate, metrics, token, index)
        return {"boxes": found}

    @app.post("/api/feedback/{answer_id}")
    def feedback(answer_id: str, body: FeedbackRequest, reviewer: Annotated[str, Depends(require_reviewer(who))]) -> Any:
        """A reviewer's assessment of one answer: recorded (on disk) before the page hears so."""
        return _record_feedback(store, kept, answer_id, body, reviewer, metrics)

    return app


def _feedback_store(settings: WebSettings, predictor: Predictor | None, metrics: ServingMetrics) -> FeedbackStore | None:
    """The feedback store (retention applied hourly) with its live-performance gauges on ``/metrics``; None when off."""
    if settings.feedback_dir is None or predictor is None:
        return None
    store, _ = open_feedback(
        settings.feedback_dir, settings.feedback_db, settings.feedback_retention, metrics.registry, predictor.config
    )
    return store


def _refuse(metrics: ServingMetrics, status: int, reason: str, message: str) -> JSONResponse:
    """Count a refused study under ``reason`` and answer ``status`` with ``message``."""
    metrics.refused(reason)
    return error_response(status, message)


def _feedback_info(store: FeedbackStore | None, reviewer: str | None) -> dict[str, Any]:
    """What the page needs to offer feedback: whether it is on, and who is signed in (their own token)."""
    return {"feedback": store is not None, "reviewer": reviewer}


def _audit_for(settings: WebSettings, predictor: Predictor | None) -> AuditTrail | None:
    """The audit trail of in-process answers (None when off or forwarding)."""
    return AuditTrail(settings.audit_dir) if settings.audit_dir is not None and predictor is not None else None


def _reviewer_lookup(settings: WebSettings) -> Any:
    """token → the reviewer's account name (None for every token when no accounts file is given)."""
    if settings.reviewers_file is None:
        return lambda token: None
    return ReviewerFile(settings.reviewers_file).who


def _record_feedback(
    store: FeedbackStore | None, kept: HeatmapCache, answer_id: str, body: FeedbackRequest, reviewer: str, metrics: ServingMetrics
) -> Any:
    """Check and record one review; then the study's views are written to the store (if still in memory).

    Returns:
        What was recorded, or an error answer: 404 (feedback off, or no such answer in the store),
        422 (no label to disagree with, or a region on no view of the study).
    """
    if store is None:
        return error_response(404, "feedback is not enabled on this server")
    try:
        region = Region(**body.region.model_dump()) if body.region is not None else None
        answer, review, row = store.assess(answer_id, "web", reviewer, body.assessment, body.label, region, body.reason)
    except LookupError:
        return error_response(404, "this answer is no longer kept (retention) or was given by another server")
    except ValueError as exc:
        return error_response(422, str(exc))
    views_kept = store.keep_views(answer_id, kept.cases(answer_id))  # reviewed: its views may now be kept
    metrics.feedback.labels("web", body.assessment).inc()
    logger.info("feedback %d recorded (%s) on an answer of model version %s", row, body.assessment, answer.model_version)
    label = review.radiologist_label
    return {
        "recorded": True,
        "feedback_id": row,
        "reviewer": reviewer,
        "radiologist_label": label,
        "agreed": label == answer.label,
        "views_kept": views_kept,
    }


def _model_for(settings: WebSettings, predictor: Any | None) -> tuple[Any | None, ForwardingPredictor | None, int]:
    """The in-process model (loaded unless given or forwarding), the forwarder, and the studies analysed at once.

    The optimized runtime is thread-safe and releases the GIL: several studies at once (one per
    core by default). Keras/TensorFlow serving keeps one study at a time.
    """
    wanted = settings.concurrency or os.cpu_count() or 1
    if predictor is None and settings.forward_url is None:
        predictor = Predictor.load(settings.model_uri, settings.tracking_uri, concurrent=wanted)
        predictor.prepare_heatmaps()  # the page asks for heatmaps by default
    forwarder = ForwardingPredictor(settings.forward_url) if settings.forward_url else None
    thread_safe = forwarder is not None or (predictor is not None and predictor.thread_safe)
    return predictor, forwarder, wanted if thread_safe else 1


def _model_info(settings: WebSettings, predictor: Predictor | None, forwarding: bool) -> dict[str, Any]:
    """What the page shows about the model: its URI, scope, operating points, validation figures and card."""
    info: dict[str, Any] = {
        "model_uri": settings.forward_url if forwarding else settings.model_uri,
        "mode": "forward" if forwarding else "in-process",
        "synthetic_data": False,
        "thresholds": {},
        "operating_point": "default",
        "variants": [],
        "validation_per_body_part": {},
        "git_commit": None,
        "body_parts": list(BODY_PARTS),
        "heatmaps": not forwarding,
        "model_card": None,
        "token_required": bool(settings.token),
    }
    if predictor is None:
        return info
    config: ServingConfig = predictor.config
    return info | {
        "synthetic_data": config.synthetic_data,
        "thresholds": config.thresholds,
        "operating_point": config.operating_point,
        "variants": list(config.variants),
        "validation_per_body_part": {k: dataclasses.asdict(v) for k, v in config.validation_per_body_part.items()},
        "git_commit": config.git_commit,
        "model_card": card.to_dict() if (card := predictor.model_card) is not None else None,
    }


class _Refused(Exception):
    """An upload refused before any work: its HTTP status, the metrics' reason label, and the message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


async def _read_uploads(files: list[UploadFile], heatmaps: str, settings: WebSettings) -> list[bytes]:
    """The uploaded views' bytes, each checked (size, emptiness, type by content) before anything decodes them.

    Raises:
        _Refused: a bad request, no file, too many or too large files, an empty one or not an image.
    """
    if heatmaps not in HEATMAP_MODES:
        raise _Refused(400, "bad_request", f"heatmaps must be one of {', '.join(HEATMAP_MODES)}")
    if not files:
        raise _Refused(400, "no_file", "no file uploaded: add one or more views of one study")
    if len(files) > settings.max_files:
        raise _Refused(413, "too_many_files", f"too many files: at most {settings.max_files} views per study")
    blobs: list[bytes] = []
    for index, upload in enumerate(files, 1):
        data = await upload.read(settings.max_file_bytes + 1)
        if len(data) > settings.max_file_bytes:
            raise _Refused(413, "too_large", f"file {index} is too large (limit {settings.max_file_bytes // 2**20} MB)")
        if not data:
            raise _Refused(400, "empty", f"file {index} is empty")
        if sniff_kind(data) is None:
            raise _Refused(415, "file_type", f"file {index} is not a PNG, JPEG or DICOM image (wrong file type)")
        blobs.append(data)
    return blobs


def _answer(
    predictor: Predictor,
    blobs: list[bytes],
    body_part: str | None,
    metrics: ServingMetrics,
    audit: AuditTrail | None,
    heatmaps: str = "inline",
    kept: HeatmapCache | None = None,
    store: FeedbackStore | None = None,
) -> dict[str, Any]:
    """One study through the shared scoring path, each phase timed, then counted, audited and recorded.

    ``heatmaps``: ``inline`` draws them into the answer; ``lazy`` keeps the views in ``kept`` and
    answers with each view's ``heatmap_url``; ``none`` draws none. With a feedback ``store`` the
    answer is recorded there and carries its ``feedback_url`` (its views wait in ``kept``).
    """
    started = time.perf_counter()
    with metrics.time("decode"):
        decoded = predictor.decode_views(blobs)
    with metrics.time("inference"):
        result = predictor.predict_decoded(decoded, body_part)
    if heatmaps == "inline":
        with metrics.time("heatmaps"):
            result = predictor.with_heatmaps(result, decoded)
    with metrics.time("render"):
        thumbs = [_thumbnail(view.gray) for view in result.views]
        page = _present(result, predictor.config, thumbs)
        if kept is not None and (heatmaps == "lazy" or store is not None):
            uploads = [upload for _, upload in decoded]
            cases = keepable_views(uploads) if store is not None else [None] * len(uploads)
            views = [(u.pixels, thumb, case) for u, thumb, case in zip(uploads, thumbs, cases, strict=True)]
            token = kept.put(views, result.probability)
            if heatmaps == "lazy":
                for index, view in enumerate(page["views"]):
                    view["heatmap_url"] = f"/api/heatmap/{token}/{index}"
                    view["boxes_url"] = f"/api/boxes/{token}/{index}"
    metrics.answered(result)
    identity = b"".join(hashlib.sha256(blob).digest() for blob in blobs)  # the upload's content, keyed later
    if audit is not None:
        audit.record("web", predictor, result, decoded, identity, time.perf_counter() - started)
    if store is not None and kept is not None:
        store.record_answer(answer_of(token, store.key(identity), "web", predictor, result))
        page["feedback_url"] = f"/api/feedback/{token}"
    return page


class _Gone(Exception):
    """What a heatmap or boxes URL named is no longer kept (answered 404)."""


def _add_gone_handler(app: FastAPI) -> None:
    @app.exception_handler(_Gone)
    async def gone(request: Request, exc: _Gone) -> JSONResponse:
        return error_response(404, "this heatmap is no longer kept: analyse the study again")


async def _drawn(
    kept: HeatmapCache, predictor: Predictor | None, gate: asyncio.Semaphore, metrics: ServingMetrics, token: str, index: int
) -> Drawn:
    """A view's overlay and boxes, drawn at the first ask (one Grad-CAM pass for both).

    Raises:
        _Gone: the answer is no longer kept (or the page forwards to a model server).
    """
    found = kept.get(token, index)
    if found is None or predictor is None:
        raise _Gone(token)
    pixels, thumb, probability, done = found
    if done is None:
        async with gate:
            done = await asyncio.to_thread(_draw_view, predictor, pixels, thumb, probability, metrics)
        kept.keep_drawn(token, index, done)
    return done


def _draw_view(predictor: Predictor, pixels: np.ndarray, thumb: np.ndarray, probability: float, metrics: ServingMetrics) -> Drawn:
    """Grad-CAM of one view (the ensemble's map, float32 pass) drawn over its thumbnail, and the view's boxes."""
    with metrics.time("heatmaps"):
        square = predictor.heatmaps(pixels[None])[ENSEMBLE][0]
        heat = heat_on_image(square, thumb.shape[:2], predictor.config.resize)  # without pad's black bands
        return png_bytes(overlay(thumb, heat), compress_level=1), _box_fractions(predictor.config, probability, heat)


def _box_fractions(config: ServingConfig, probability: float, heat: np.ndarray) -> dict[str, list[dict[str, float]]]:
    """One view's boxes per box operating point, as fractions of the view (none below a point's threshold)."""
    if not config.box_levels:
        return {}
    found = study_boxes([heat], probability, config.thresholds, config.box_levels)
    return {point: [box.fractions(heat.shape[:2]) for box in per_view[0]] for point, per_view in found.items()}


def _plain(message: str) -> str:
    """Turn decoder reasons into plain words for the page."""
    replacements = {
        "no pixel data": "this DICOM file has no image in it",
        "undecodable": "the file cannot be read as an image",
        "truncated": "the file is incomplete (truncated)",
        "too large": "the image has too many pixels",
    }
    for key, words in replacements.items():
        if key in message:
            prefix = message.split(":")[0]
            return f"{prefix}: {words}"
    return message


def _present(result: StudyResult, config: ServingConfig, thumbs: list[np.ndarray]) -> dict[str, Any]:
    """The answer the page renders: verdict, per-view thumbnails and overlays, per-variant breakdown."""
    views = []
    for index, (view, thumb) in enumerate(zip(result.views, thumbs, strict=True)):
        heatmap = view.heatmaps.get(ENSEMBLE)
        shape = view.gray.shape[:2]
        boxes = {point: [b.fractions(shape) for b in per_view[index]] for point, per_view in result.boxes.items()}
        views.append(
            ViewAnswer(
                name=view.name,
                kind=view.kind,
                probability=view.probability,
                variants=view.variants,
                warnings=list(view.warnings),
                image=_data_url(png_bytes(thumb, compress_level=1)),
                heatmap=None if heatmap is None else _data_url(png_bytes(overlay(thumb, heatmap), compress_level=1)),
                boxes=boxes if heatmap is not None else None,
            )
        )
    validation = config.validation_for(result.body_part)
    answer = StudyAnswer(
        verdict=result.label,  # type: ignore[arg-type]  # "normal" | "abnormal"
        probability=result.probability,
        probability_raw=result.probability_raw,
        operating_point=result.operating_point,
        threshold=result.thresholds[result.operating_point],
        labels=result.labels,
        variants=result.variants,
        views=views,
        body_part=result.body_part,
        synthetic_data=result.synthetic_data,
        warnings=result.warnings,
        validation=dataclasses.asdict(validation) if validation else None,
    )
    return answer.model_dump()


def _forwarded(answer: dict[str, Any], body_part: str) -> dict[str, Any]:
    """The same answer from a model server's rows (no heatmaps, thumbnails or validation figures)."""
    rows = [ServedRow.model_validate(r) for r in answer.get("predictions", [])]
    if not rows:
        raise ValueError("the model server returned no prediction")
    per_view = [r.variant_probabilities() for r in rows]
    names = sorted(per_view[0])
    study = StudyAnswer(
        verdict=rows[0].study_label,
        probability=rows[0].study_probability,
        probability_raw=rows[0].study_probability_raw,
        operating_point="registered",
        threshold=rows[0].threshold,
        variants={v: float(np.mean([p[v] for p in per_view])) for v in names},
        views=[
            ViewAnswer(name=f"view {i + 1}", kind="image", probability=r.probability, variants=p, warnings=r.warning_list())
            for i, (r, p) in enumerate(zip(rows, per_view, strict=True))
        ],
        body_part=normalize_body_part(body_part),
        synthetic_data=None,
        warnings=[f"view {i + 1}: {w}" for i, r in enumerate(rows) for w in r.warning_list()],
    )
    return study.model_dump()


def serve(settings: WebSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the app with uvicorn (access log keeps method and path only)."""
    # log_config=None: uvicorn's lines go through the root logger, in the format chosen (text or JSON).
    redact_access_log()
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=None)

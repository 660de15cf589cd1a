"""``mura serve-model``: MLflow's own scoring server for the registered model, plus ``/metrics``.

``mlflow models serve`` exposes ``/ping``, ``/health``, ``/version`` and ``/invocations`` and no
metrics. This entry point builds the *same* FastAPI app (``mlflow.pyfunc.scoring_server.init``
on the loaded pyfunc: MLflow's request parsing, errors and response format, unchanged) and adds
``/metrics`` with the web UI's and the DICOM node's Prometheus metrics: requests by outcome,
latency, requests in flight, and per answered study its probability, labels, body part and scope
warnings — and appends each answered study to the audit trail (``--audit-dir``), as the other
entry points do. Both come from the service's observer, which sees the decoded views (DICOM
body part, image statistics) without decoding twice. ``make serve``, the image's model-server
service and the contract tests use it; ``mlflow models serve`` keeps working and answers
identically, without metrics or audit trail.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pandas as pd
import uvicorn
from fastapi import Request

from mura.apps.http import add_metrics_route, add_request_ids
from mura.data.uploads import DecodedUpload
from mura.operations.telemetry import AuditTrail, ServingMetrics
from mura.runtime.predictor import Predictor, load_served_model, study_result
from mura.runtime.service import Observer

__all__ = ["create_model_server", "observe_answers", "serve_model"]

ENTRY_POINT = "model-server"


def observe_answers(metrics: ServingMetrics, audit: AuditTrail | None, predictor: Predictor) -> Observer:
    """The service's observer: count each answered study and append it to the audit trail.

    A request may carry several studies (rows grouped by ``study_id``); each becomes one
    :class:`~mura.runtime.predictor.StudyResult`, exactly as the web UI and the node see theirs.
    The study key hashes the study's image bytes (keyed), never the client's ``study_id``.
    """

    def observe(rows: list[tuple[bytes, str]], uploads: list[DecodedUpload], frame: pd.DataFrame, seconds: float) -> None:
        for _study, group in frame.groupby("study_id", sort=False):
            positions = group["row"].to_numpy()
            decoded = [(f"view{k + 1}", uploads[i]) for k, i in enumerate(positions)]
            result = study_result(predictor.config, group, decoded)
            metrics.answered(result)
            if audit is not None:
                identity = b"".join(hashlib.sha256(rows[i][0]).digest() for i in positions)
                audit.record(ENTRY_POINT, predictor, result, decoded, identity, seconds)

    return observe


def create_model_server(model_uri: str, tracking_uri: str | None = None, streams: int = 1, audit_dir: Path | None = None) -> Any:
    """MLflow's scoring app on ``model_uri`` with ``/metrics`` added and answers audited (see the module docstring).

    Args:
        model_uri: ``models:/mura-ensemble/1``, ``models:/mura-ensemble@champion`` or a local pyfunc folder.
        tracking_uri: MLflow tracking store (default ``$MLFLOW_TRACKING_URI`` or ./mlflow.db).
        streams: requests the optimized runtime runs at once.
        audit_dir: the audit trail's folder (None: no trail).
    """
    from mlflow.pyfunc import scoring_server  # lazy: heavy (~1 s): only when talking to the tracking store

    model, version = load_served_model(model_uri, tracking_uri, {"streams": streams})
    service = model.unwrap_python_model().service
    predictor = Predictor(service, model_uri, version)
    metrics = ServingMetrics(ENTRY_POINT, predictor)
    audit = AuditTrail(audit_dir) if audit_dir is not None else None
    service.observer = observe_answers(metrics, audit, predictor)
    app = scoring_server.init(model)

    add_metrics_route(app, metrics.registry)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        if request.url.path != "/invocations":
            response = await call_next(request)
        else:  # answered studies are counted (and audited) by the service's observer; here: time and refusals
            started = time.perf_counter()
            with metrics.in_flight.labels(ENTRY_POINT).track_inprogress():
                response = await call_next(request)
            metrics.phase.labels(ENTRY_POINT, "request").observe(time.perf_counter() - started)
            if response.status_code != 200:
                metrics.refused("bad_request" if response.status_code < 500 else "server_error")
        return response

    add_request_ids(app)  # last added, first run: the id is set for the observer and every log line
    return app


def serve_model(
    model_uri: str,
    host: str = "127.0.0.1",
    port: int = 5000,
    tracking_uri: str | None = None,
    audit_dir: Path | None = None,
) -> None:
    """Run the scoring server with uvicorn (what ``mlflow models serve`` runs, one worker)."""
    app = create_model_server(model_uri, tracking_uri, audit_dir=audit_dir)
    # log_config=None: uvicorn's lines go through the root logger, in the format chosen (text or JSON).
    uvicorn.run(app, host=host, port=port, log_level="info", log_config=None)

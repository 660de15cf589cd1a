"""``mura serve-model``: MLflow's own scoring server for the registered model, plus ``/metrics``.

``mlflow models serve`` exposes ``/ping``, ``/health``, ``/version`` and ``/invocations`` and no
metrics. This entry point builds the *same* FastAPI app (``mlflow.pyfunc.scoring_server.init``
on the loaded pyfunc: MLflow's request parsing, errors and response format, unchanged) and adds
``/metrics`` with the web UI's and the DICOM node's Prometheus metrics: requests by outcome,
latency, requests in flight, and per answered study its probability, label and scope warnings
(read from the served rows). ``make serve``, the image's model-server service and the contract
tests use it; ``mlflow models serve`` keeps working and answers identically.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mura.serving.observability import ServingMetrics, warning_kind
from mura.serving.predictor import Predictor, registered_version
from mura.serving.service import WARNING_SEPARATOR

__all__ = ["create_model_server", "record_rows", "serve_model"]

ENTRY_POINT = "model-server"


def record_rows(metrics: ServingMetrics, rows: list[dict[str, Any]], operating_point: str) -> None:
    """Count the studies of one ``/invocations`` answer (its rows carry each study's probability and label)."""
    studies: dict[str, dict[str, Any]] = {}
    for row in rows:
        study = studies.setdefault(str(row.get("study_id")), {"row": row, "warnings": []})
        study["warnings"] += [w for w in str(row.get("warnings") or "").split(WARNING_SEPARATOR) if w]
    for study in studies.values():
        row = study["row"]
        metrics.requests.labels(ENTRY_POINT, "answered", "").inc()
        metrics.probability.labels(ENTRY_POINT, "unknown").observe(float(row["study_probability"]))
        metrics.labels.labels(ENTRY_POINT, operating_point, str(row["study_label"]), "unknown").inc()
        for warning in study["warnings"]:
            metrics.warnings.labels(ENTRY_POINT, warning_kind(warning)).inc()


def create_model_server(model_uri: str, tracking_uri: str | None = None, streams: int = 1) -> Any:
    """MLflow's scoring app on ``model_uri`` with ``/metrics`` added (see the module docstring)."""
    import mlflow
    from fastapi import Request
    from fastapi.responses import Response
    from mlflow.pyfunc import scoring_server

    from mura.tracking import server_errors, use_tracking_uri
    from mura.tracking import tracking_uri as default_uri

    store = use_tracking_uri(tracking_uri or default_uri())
    with server_errors(f"loading {model_uri}", store):
        model = mlflow.pyfunc.load_model(model_uri, model_config={"streams": streams})
        version = registered_version(model_uri)
    service = model.unwrap_python_model().service
    metrics = ServingMetrics(ENTRY_POINT, Predictor(service, model_uri, version))
    app = scoring_server.init(model)
    operating_point = service.config.operating_point

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        if request.url.path != "/invocations":
            return await call_next(request)
        started = time.perf_counter()
        with metrics.in_flight.labels(ENTRY_POINT).track_inprogress():
            response = await call_next(request)
            body = b"".join([chunk async for chunk in _chunks(response.body_iterator)])
        metrics.phase.labels(ENTRY_POINT, "request").observe(time.perf_counter() - started)
        if response.status_code == 200:
            record_rows(metrics, json.loads(body).get("predictions", []), operating_point)
        else:
            metrics.refused("bad_request" if response.status_code < 500 else "server_error")
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return Response(content=body, status_code=response.status_code, headers=headers, media_type=response.media_type)

    return app


async def _chunks(iterator: Any) -> AsyncIterator[bytes]:
    async for chunk in iterator:
        yield chunk if isinstance(chunk, bytes) else chunk.encode()


def serve_model(model_uri: str, host: str = "127.0.0.1", port: int = 5000, tracking_uri: str | None = None) -> None:
    """Run the scoring server with uvicorn (what ``mlflow models serve`` runs, one worker)."""
    import uvicorn

    uvicorn.run(create_model_server(model_uri, tracking_uri), host=host, port=port, log_level="info")

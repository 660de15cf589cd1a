"""What the web page and the model server share over HTTP: request ids, ``/metrics`` and the access token.

Written once here: each app adds the request-id middleware and the Prometheus route, and
declares the token check as a FastAPI dependency on the routes it protects.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mura.operations.logging_context import new_request_id

__all__ = [
    "Unauthorized",
    "add_metrics_route",
    "add_request_ids",
    "add_unauthorized_handler",
    "bearer",
    "error_response",
    "redact_access_log",
    "require_reviewer",
    "require_token",
]

TOKEN_REQUIRED = "a valid access token is required"
REVIEWER_REQUIRED = "feedback needs your own reviewer token (the operator creates it: mura reviewers add NAME)"


class Unauthorized(Exception):
    """A request without the deployment's bearer token (answered 401 with one line)."""


_CAPABILITY = re.compile(r"(/api/(?:heatmap|feedback)/)[A-Za-z0-9_-]+")


class _RedactCapabilities(logging.Filter):
    """Replace the unguessable tokens in heatmap and feedback paths with ``<token>`` in uvicorn's access lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_CAPABILITY.sub(r"\1<token>", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_access_log() -> None:
    """Keep answer tokens out of the access log: a token names a study's kept views for a while."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactCapabilities) for f in access.filters):
        access.addFilter(_RedactCapabilities())


def error_response(status: int, message: str) -> JSONResponse:
    """The apps' error body: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status)


def add_request_ids(app: FastAPI) -> None:
    """Every log line of a request carries its id (the caller's ``X-Request-ID`` or a new one), echoed back.

    Add it last: the last middleware added runs first, so the id is set for every other one.
    """

    @app.middleware("http")
    async def request_id(request: Request, call_next: Any) -> Any:
        rid = new_request_id(request.headers.get("x-request-id"))
        response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response


def add_metrics_route(app: FastAPI, registry: CollectorRegistry) -> None:
    """``GET /metrics`` in Prometheus's text format (no identifying label; scrape it from the monitoring network)."""

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def bearer(request: Request) -> str:
    """The request's bearer token ('' when none)."""
    header = request.headers.get("authorization", "")
    return header[len("Bearer ") :] if header.startswith("Bearer ") else ""


def require_token(
    token: str | None, on_refusal: Callable[[], None] | None = None, also: Callable[[str], object] | None = None
) -> Callable[[Request], None]:
    """A FastAPI dependency that lets a request through only with ``Authorization: Bearer <token>``.

    Args:
        token: the deployment's token; None or empty: every request passes.
        on_refusal: called for each refused request (e.g. to count it).
        also: other bearer tokens accepted when it returns a true value (reviewers' own tokens).

    Raises:
        Unauthorized: from the dependency, when the header is missing or wrong (install
            :func:`add_unauthorized_handler`'s handler on the app to answer 401).
    """

    def check(request: Request) -> None:
        if not token:
            return
        if hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
            return
        if also is None or not also(bearer(request)):
            if on_refusal is not None:
                on_refusal()
            raise Unauthorized(TOKEN_REQUIRED)

    return check


def require_reviewer(who: Callable[[str], str | None]) -> Callable[[Request], str]:
    """A FastAPI dependency answering the reviewer's account name from their own bearer token.

    Raises:
        Unauthorized: from the dependency, when the token is no reviewer's.
    """

    def check(request: Request) -> str:
        name = who(bearer(request))
        if name is None:
            raise Unauthorized(REVIEWER_REQUIRED)
        return name

    return check


def add_unauthorized_handler(app: FastAPI) -> None:
    """Answer :class:`Unauthorized` with 401 and the apps' error body."""

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, str(exc))

"""Logging for servers and the ``mura`` command: JSON lines, and the request id that ties a request's lines together.

Kept out of :mod:`mura.stage` so that a log format or the request-id rule is no dependency
of any pipeline stage (editing them reruns no training).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import uuid

from mura.settings import runtime_settings
from mura.stage import configure_logging

__all__ = ["LOG_FORMATS", "REQUEST_ID", "JsonFormatter", "configure_service_logging", "new_request_id"]

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("mura_request_id", default="")
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the current request id, and the traceback if any.

    The message is the same text as the plain format (never pixels, DICOM tags or file names:
    those are not logged anywhere); ``request_id`` ties a server's lines to one answer.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if request_id := REQUEST_ID.get():
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def new_request_id(given: str | None = None) -> str:
    """Set and return this request's id: the caller's ``X-Request-ID`` when it is a plain token, else a new one."""
    request_id = given if given and len(given) <= 64 and given.replace("-", "").isalnum() else uuid.uuid4().hex
    REQUEST_ID.set(request_id)
    return request_id


def configure_service_logging(level: str | None = None, log_format: str | None = None) -> None:
    """Log to stderr: ``LEVEL name: message`` lines, or JSON lines (:class:`JsonFormatter`).

    Args:
        level: default ``$MURA_LOG_LEVEL`` or INFO.
        log_format: ``text`` or ``json``; default ``$MURA_LOG_FORMAT`` or text.

    Raises:
        ValueError: an unknown format.
    """
    chosen = (log_format or runtime_settings().log_format).lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {chosen!r}")
    configure_logging(level, JsonFormatter() if chosen == "json" else None)

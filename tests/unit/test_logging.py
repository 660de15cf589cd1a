"""Structured logs: JSON lines with the request id, and request ids that cannot carry identifying text."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from mura.cli import duration
from mura.operations.logging_context import REQUEST_ID, JsonFormatter, new_request_id


def _line(message: str, *args: object, exc: bool = False) -> dict:
    record = logging.LogRecord("mura.test", logging.WARNING, __file__, 1, message, args, None)
    if exc:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            import sys

            record.exc_info = sys.exc_info()
    return json.loads(JsonFormatter().format(record))


def test_json_lines_carry_level_logger_message_and_the_request_id() -> None:
    token = REQUEST_ID.set("")
    try:
        assert "request_id" not in _line("no request")
        new_request_id("abc-123")
        line = _line("study %s answered", "k1")
        assert line["level"] == "WARNING" and line["logger"] == "mura.test" and line["message"] == "study k1 answered"
        assert line["request_id"] == "abc-123" and line["time"].endswith("+00:00")
        assert "RuntimeError: boom" in _line("failed", exc=True)["exception"]
    finally:
        REQUEST_ID.reset(token)


@pytest.mark.parametrize("given", [None, "", "Jane Doe", "x" * 65, "1.2.840.113619.2.55", "a\nb"])
def test_a_request_id_that_is_not_a_plain_token_is_replaced(given: str | None) -> None:
    token = REQUEST_ID.set("")
    try:
        chosen = new_request_id(given)
        assert chosen != given and len(chosen) == 32 and chosen.isalnum() and REQUEST_ID.get() == chosen
    finally:
        REQUEST_ID.reset(token)


def test_durations() -> None:
    assert [duration(t) for t in ("90", "90s", "15m", "6h", "7d", "0.5h")] == [90, 90, 900, 21600, 604800, 1800]
    for bad in ("soon", "-1h", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)

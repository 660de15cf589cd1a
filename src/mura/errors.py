"""Error types whose message is shown to the user as one line.

Stages and the CLI catch :class:`MuraError` and print ``error: <message>``
instead of a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MuraError(Exception):
    """Base class: a problem the user can fix (bad data, bad params)."""


class ConfigError(MuraError):
    """A parameter in params.yaml is missing, of the wrong type or out of range."""


class DataError(MuraError):
    """An input file or folder does not have the expected layout or content."""


class TrackingError(MuraError):
    """The MLflow tracking server is unreachable or refused the request (message names the URI, never a secret)."""

"""Options several ``mura`` commands share, defined once (same names, defaults and help everywhere)."""

from __future__ import annotations

import argparse

from mura.settings import runtime_settings

__all__ = ["DEFAULT_MODEL", "add_audit_option", "add_model_option", "add_tracking_option", "default_audit_dir", "duration"]

DEFAULT_MODEL = "models:/mura-ensemble@champion"


def add_model_option(parser: argparse.ArgumentParser, short: bool = False) -> None:
    """``--model`` (``-m`` too where MLflow's own CLI has it): the registered model or a local folder."""
    names = ("--model", "-m") if short else ("--model",)
    parser.add_argument(
        *names,
        default=DEFAULT_MODEL,
        help="model URI (models:/mura-ensemble@champion, models:/mura-ensemble/1) or a local model folder",
    )


def add_tracking_option(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri``: where ``models:/`` URIs are looked up."""
    parser.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db)"
    )


def add_audit_option(parser: argparse.ArgumentParser) -> None:
    """``--audit-dir`` of a server: one JSON line per answer."""
    parser.add_argument(
        "--audit-dir",
        default=default_audit_dir(),
        help="audit trail folder: one JSON line per answer (default $MURA_AUDIT_DIR or ~/.local/state/mura/audit)",
    )


def default_audit_dir() -> str:
    """The servers' audit trail folder: ``$MURA_AUDIT_DIR``, else ``~/.local/state/mura/audit``."""
    return str(runtime_settings().server_audit_dir)


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``6h`` or ``7d`` (argparse type)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 6h, 7d)") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"a duration must be positive, got {text!r}")
    return seconds

"""Options several ``mura`` commands share, defined once (same names, defaults and help everywhere)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mura.settings import runtime_settings

__all__ = [
    "DEFAULT_MODEL",
    "add_audit_option",
    "add_feedback_options",
    "add_model_option",
    "add_tracking_option",
    "default_audit_dir",
    "duration",
    "feedback_settings",
]

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


def add_feedback_options(parser: argparse.ArgumentParser) -> None:
    """``--feedback-dir`` and its retention: where a server records answers and radiologists' reviews."""
    parser.add_argument(
        "--feedback-dir",
        default=None,
        help="record answers and radiologists' feedback here (kept views, key, default SQLite database); off when not given",
    )
    parser.add_argument(
        "--feedback-db",
        default=None,
        help="the feedback database URL (default $MURA_FEEDBACK_DB, else SQLite in --feedback-dir)",
    )
    parser.add_argument(
        "--answer-days", type=float, default=30.0, help="keep answers nobody reviewed (and their views) this long (default 30)"
    )
    parser.add_argument(
        "--feedback-days", type=float, default=730.0, help="keep reviewed answers, reviews and views this long (default 730)"
    )


def feedback_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``feedback_*`` fields of a server's settings from :func:`add_feedback_options`' options."""
    from mura.operations.feedback import Retention

    return {
        "feedback_dir": Path(args.feedback_dir) if args.feedback_dir else None,
        "feedback_db": args.feedback_db or runtime_settings().feedback_db,
        "feedback_retention": Retention(answer_days=args.answer_days, feedback_days=args.feedback_days),
    }

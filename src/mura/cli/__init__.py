"""The ``mura`` command line: one module per command group, the shared options defined once.

``mura --help`` is the map; ``mura <command> --help`` documents each command. Each command
imports what it runs inside its ``cmd_*`` function: ``mura --help`` and a one-shot command load
only their own part of the package (the servers pull in MLflow, FastAPI, pynetdicom and
OpenVINO; ``synth`` needs none of them).
"""

from __future__ import annotations

import argparse
import os

from mura.cli import data, feedback, hospital, predict, serving, team
from mura.cli.options import duration
from mura.operations.logging_context import LOG_FORMATS, configure_service_logging
from mura.stage import run_main

__all__ = ["build_parser", "duration", "main"]

GROUPS = (data, team, predict, hospital, feedback, serving)  # the order of `mura --help`


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all subcommands."""
    parser = argparse.ArgumentParser(
        prog="mura", description="Musculoskeletal radiograph abnormality detection (pre-screening aid)."
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help="text lines (default) or one JSON object per line with the request id (or set MURA_LOG_FORMAT)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``mura`` command."""
    args = build_parser().parse_args(argv)
    if args.log_format:  # worker processes (the DICOM node's, register's export) inherit it
        os.environ["MURA_LOG_FORMAT"] = args.log_format
    configure_service_logging()
    run_main(lambda: args.func(args), logging_ready=True)

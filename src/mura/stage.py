"""Shared shell for stage scripts and CLI commands: logging, seeds, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mura.errors import MuraError
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)

P = TypeVar("P")  # a stage's paths dataclass


class Layout:
    """The standard workspace layout: where one stage writes what a later one reads.

    The defaults of the stages' paths dataclasses (``IngestPaths``, ``EnsemblePaths``, …), written
    once; ``dvc.yaml`` passes the same paths explicitly.
    """

    IMAGES = Path("data/interim/images.csv")
    PIXELS = Path("data/interim/pixels.npy")
    SPLIT = Path("data/processed/split.csv")
    CLASS_WEIGHTS = Path("reports/class_weights.json")
    MODELS = Path("models")
    TRAIN_REPORTS = Path("reports/train")  # <variant>/history.csv, metrics.json
    PREDICTIONS = Path("reports/predictions")
    THRESHOLDS = Path("reports/thresholds.json")
    METRICS = Path("reports/metrics.json")
    PER_BODY_PART = Path("reports/per_body_part.csv")


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and, when Keras is in use, the Keras backend.

    Keras is only seeded if it was already imported, so the data stages do not
    pay for importing TensorFlow.
    """
    # Deterministic kernels where the TensorFlow backend offers them (read at import).
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "keras" in sys.modules:
        import keras  # lazy: heavy (seconds): only when a model is built, trained or run

        keras.utils.set_random_seed(seed)


def configure_logging(level: str | None = None, formatter: logging.Formatter | None = None) -> None:
    """Log to stderr as ``LEVEL name: message`` lines (or with ``formatter``), once per process.

    Stage scripts log plain lines; servers and the ``mura`` command choose their format in
    :func:`mura.operations.logging_context.configure_service_logging` (JSON lines with request
    ids), so a log format is no dependency of a training stage.

    Args:
        level: default ``$MURA_LOG_LEVEL`` or INFO.
        formatter: default the plain line format.
    """
    root = logging.getLogger()
    for previous in [h for h in root.handlers if getattr(h, "mura", False)]:
        root.removeHandler(previous)
    if root.handlers:  # an embedding application (or pytest) configured logging: leave it as it is
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.mura = True  # type: ignore[attr-defined]
    handler.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel((level or runtime_settings().log_level).upper())


def parse_stage_args(
    description: str, paths_type: type[P], extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> tuple[argparse.Namespace, P]:
    """A stage script's command line: ``--params`` and one option per field of its paths dataclass.

    Each stage module defines its inputs and outputs once, as a frozen dataclass whose defaults
    are the standard layout (``EnsemblePaths``, ``EvaluatePaths``, …); a field ``models_dir``
    is the option ``--models-dir``, a ``tuple[Path, ...]`` field takes several values.
    ``dvc.yaml`` passes every path explicitly (DVC must see them).

    Args:
        description: the script's one-line description.
        paths_type: the stage's paths dataclass.
        extra: adds the stage's other options (``--model`` of ``train``).

    Returns:
        The parsed options and the paths.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="the params file (default params.yaml)")
    if extra is not None:
        extra(parser)
    hints = typing.get_type_hints(paths_type)
    for field in dataclasses.fields(paths_type):  # type: ignore[arg-type]
        default: Any = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()  # type: ignore[operator]
        option = "--" + field.name.replace("_", "-")
        if typing.get_origin(hints[field.name]) is tuple:
            shown = " ".join(map(str, default))
            parser.add_argument(option, type=Path, nargs="*", default=list(default), help=f"default: {shown}")
        else:
            parser.add_argument(option, type=Path, default=default, help=f"default: {default}")
    args = parser.parse_args()
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(paths_type)}  # type: ignore[arg-type]
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return args, paths_type(**values)


def run_main(main: Callable[[], Any], logging_ready: bool = False) -> None:
    """Run a stage's ``main()``; a :class:`MuraError` becomes one line on stderr and exit 2.

    Args:
        main: the stage's (or command's) body.
        logging_ready: the caller configured logging already (the ``mura`` command); else plain lines.
    """
    if not logging_ready:
        configure_logging()
    try:
        main()
    except MuraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON with sorted keys and a trailing newline (stable bytes for DVC)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a DataFrame as CSV without index (stable bytes for DVC)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")

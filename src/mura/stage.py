"""Shared shell for stage scripts and CLI commands: logging, seeds, one-line errors."""

from __future__ import annotations

import json
import logging
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mura.errors import MuraError

logger = logging.getLogger(__name__)


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
        import keras

        keras.utils.set_random_seed(seed)


def configure_logging(level: str | None = None) -> None:
    """Log ``LEVEL name: message`` lines to stderr (level from ``MURA_LOG_LEVEL``, default INFO)."""
    logging.basicConfig(
        level=(level or os.environ.get("MURA_LOG_LEVEL", "INFO")).upper(),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_main(main: Callable[[], Any]) -> None:
    """Run a stage's ``main()``; a :class:`MuraError` becomes one line on stderr and exit 2."""
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

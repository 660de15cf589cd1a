"""Worker processes: how many, and how they start (ingest's decoding, `mura synth`'s encoding, register's export)."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.context import BaseContext

__all__ = ["process_context", "worker_count"]


def worker_count(requested: int) -> int:
    """``requested`` processes, or one per core when it is 0 (the params' convention)."""
    return requested or os.cpu_count() or 1


def process_context() -> BaseContext:
    """Forkserver where the platform has it, else spawn; never fork.

    A forked child would inherit the parent's threads and state mid-flight (TensorFlow's and
    OpenVINO's thread pools, an open SQLite store): the workers start from a clean interpreter.
    """
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")

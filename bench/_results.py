"""Append benchmark figures to bench/RESULTS.md with date and machine."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """CPU model and core count (or the accelerator, when given by the caller)."""
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def append(title: str, lines: list[str], device: str | None = None) -> None:
    """Append one dated section to RESULTS.md and echo it."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"\n## {title} — {stamp}\nMachine: {device or machine()}\n\n" + "\n".join(lines) + "\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nAppended by the scripts in bench/; newest last.\n")
    with RESULTS.open("a") as handle:
        handle.write(text)
    print(text)

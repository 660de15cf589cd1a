"""Which precision serves: the allowed ones this CPU runs, timed once per CPU, OpenVINO version and model.

A reduced precision (bf16, int8) is *allowed* only when ``register`` proved it harmless on the
validation split (``ServingConfig.allowed_precisions``); bf16 also needs a CPU with native bf16,
int8 its own IR. Among the allowed ones the fastest on this CPU serves: each is compiled and
timed on one image at the first load, and the winner remembered in
``~/.cache/mura/precision.json``. ``$MURA_PRECISION`` forces one (benchmarks, operators).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mura.config import Precision
from mura.errors import ConfigError
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)

__all__ = [
    "INT8_XML",
    "MODEL_XML",
    "PRECISIONS",
    "available_precisions",
    "cache_base",
    "choose_precision",
    "cpu_has_bf16",
    "forced_precision",
    "one_image_seconds",
]

PRECISIONS: tuple[Precision, ...] = typing.get_args(Precision)
MODEL_XML = "model.xml"  # float32 IR: probabilities + each variant's last feature maps
INT8_XML = "model_int8.xml"  # the same graph quantized to int8 (register.int8)


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin reports native bf16 (e.g. AVX512-BF16, AMX)."""
    import openvino as ov  # lazy: optional runtime: only when exporting or serving with it

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def available_precisions(optimized_dir: Path, allowed: Sequence[str]) -> list[str]:
    """The allowed precisions this CPU and this export can run: float32 first, then bf16 (native bf16), int8 (its IR)."""
    out = ["f32"]
    if "bf16" in allowed and cpu_has_bf16():
        out.append("bf16")
    if "int8" in allowed and (Path(optimized_dir) / INT8_XML).is_file():
        out.append("int8")
    return out


def forced_precision(optimized_dir: Path, force: str | None = None) -> str | None:
    """The precision ``force`` or ``$MURA_PRECISION`` asks for (None: choose), checked against this model and CPU.

    Raises:
        ConfigError: an unknown precision, or int8 for a model without an int8 export.
    """
    forced = (runtime_settings().precision if force is None else force) or None
    if forced is not None and forced not in PRECISIONS:
        raise ConfigError(f"MURA_PRECISION={forced!r}: expected one of {', '.join(PRECISIONS)}")
    if forced == "int8" and not (Path(optimized_dir) / INT8_XML).is_file():
        raise ConfigError("MURA_PRECISION=int8 but this model has no int8 export (register.int8 was off)")
    if forced == "bf16" and not cpu_has_bf16():
        logger.info("MURA_PRECISION=bf16 but this CPU has no native bf16: serving in float32")
        forced = "f32"
    return forced


def one_image_seconds(compiled: Any) -> float:
    """One image through a compiled model, after the first inference that sets OpenVINO up."""
    size = compiled.inputs[0].get_partial_shape()[1].get_length()
    one = np.zeros((1, size, size, 1), np.uint8)
    request = compiled.create_infer_request()
    request.infer([one])
    start = time.perf_counter()
    request.infer([one])
    return time.perf_counter() - start


def choose_precision(
    optimized_dir: Path,
    candidates: list[str],
    compile_one: Callable[[str], Any],
    openvino_version: str,
    time_all: bool,
) -> tuple[str, dict[str, Any], dict[str, float]]:
    """The precision that serves, the models compiled on the way, and their one-image times.

    With several candidates, the one remembered for this CPU, OpenVINO version and model
    serves; else each is compiled and timed and the fastest remembered.

    Args:
        optimized_dir: the ``optimized`` artifact.
        candidates: the precisions that may serve (one when forced or not picking).
        compile_one: compiles one precision's model.
        openvino_version: part of what decides the fastest.
        time_all: time the lone candidate too (the runner's warm-up uses the figure), unless it was remembered.
    """
    key = _precision_cache_key(optimized_dir / MODEL_XML, openvino_version, candidates) if len(candidates) > 1 else ""
    known = _read_precision_cache().get(key) if key else None
    if known in candidates:  # measured on this CPU for this model before: no need to time again
        candidates = [known]
    compiled = {c: compile_one(c) for c in candidates}
    # A remembered choice needs no timing: the warm-up then starts with one image (the same set-up, one inference less).
    timed = len(candidates) > 1 or (time_all and known is None)
    timings = {c: one_image_seconds(m) for c, m in compiled.items()} if timed else {}
    if len(candidates) == 1:
        return candidates[0], compiled, timings
    chosen = min(timings, key=timings.__getitem__)
    shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    logger.info("allowed %s; one image takes %s on this CPU: serving %s", "/".join(candidates), shown, chosen)
    _write_precision_cache(key, chosen)
    return chosen, compiled, timings


def cache_base() -> Path:
    """``$XDG_CACHE_HOME/mura`` (default ``~/.cache/mura``): the precision choices and the compiled models."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")) / "mura"


def _precision_cache_file() -> Path:
    return cache_base() / "precision.json"


def _precision_cache_key(xml: Path, openvino_version: str, candidates: Sequence[str]) -> str:
    """The CPU model, the OpenVINO version, the model's IR and the candidates: what decides which is fastest."""
    cpu = "cpu"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    digest = hashlib.sha256(Path(xml).read_bytes()).hexdigest()[:16]
    return f"{cpu}|{os.cpu_count()}|{openvino_version}|{digest}|{'/'.join(candidates)}"


def _read_precision_cache() -> dict[str, str]:
    try:
        data = json.loads(_precision_cache_file().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_precision_cache(key: str, precision: str) -> None:
    """Remember the faster precision (best effort: a read-only home only costs the timing next time)."""
    try:
        path = _precision_cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**_read_precision_cache(), key: precision}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass

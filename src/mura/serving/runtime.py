"""The served model's runtimes: OpenVINO on CPU (optimized) and Keras (reference, accelerators).

``register`` exports the combined variants to OpenVINO IR (probabilities plus
each variant's last feature maps, so Grad-CAM stays exact) and stores it, with
the heads' weights, as the ``optimized`` artifact of ``mura-ensemble``. Which
runtime serves is ``ServingConfig.runtime`` (``register.runtime``), overridden
by ``$MURA_RUNTIME``:

* ``auto``: the optimized runtime when the model has it and OpenVINO imports,
  else Keras;
* ``optimized``: OpenVINO, or an error naming what is missing;
* ``keras``: the Keras models (use it on GPU hosts).

The optimized path never imports Keras or TensorFlow: processes and images that
serve with it start in about a second instead of ten. Reduced precision (bf16)
is allowed only when ``register`` proved it harmless on the validation split
and the CPU has native bf16; even then it serves only if it is faster on this
CPU (timed at the first load on a CPU and remembered in
``~/.cache/mura/precision.json``, keyed by CPU model, OpenVINO version and
model: on a CPU with AVX512-BF16 but no AMX, OpenVINO's bf16 was measured
slower than float32). ``$MURA_PRECISION`` (``f32`` or ``bf16``) forces one, for
benchmarks and operators.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mura.config import ServingRuntime
from mura.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "HEADS_FILE",
    "MODEL_XML",
    "OPTIMIZED_ARTIFACT",
    "RUNTIMES",
    "OpenVinoRunner",
    "cpu_has_bf16",
    "describe",
    "resolve_runtime",
]

RUNTIMES: tuple[ServingRuntime, ...] = typing.get_args(ServingRuntime)
OPTIMIZED_ARTIFACT = "optimized"  # artifact key: a folder holding MODEL_XML (+ .bin) and HEADS_FILE
MODEL_XML = "model.xml"
HEADS_FILE = "heads.npz"
WARM_UP_BUDGET_S = 1.5  # at load, warm further batch sizes while this many seconds suffice


def resolve_runtime(configured: str, optimized_dir: Path | None) -> Literal["optimized", "keras"]:
    """The runtime that serves: ``$MURA_RUNTIME`` or the configured one, ``auto`` resolved.

    Raises:
        ConfigError: an unknown runtime, or ``optimized`` without its artifact or without OpenVINO.
    """
    wanted = os.environ.get("MURA_RUNTIME") or configured
    if wanted not in RUNTIMES:
        raise ConfigError(f"runtime {wanted!r} is not one of {list(RUNTIMES)} (MURA_RUNTIME or register.runtime)")
    if wanted == "keras":
        return "keras"
    has_artifact = optimized_dir is not None and (optimized_dir / MODEL_XML).is_file()
    try:
        import openvino  # noqa: F401

        has_openvino = True
    except ImportError:
        has_openvino = False
    if has_artifact and has_openvino:
        return "optimized"
    if wanted == "optimized":
        missing = "this model has no optimized artifact (registered before it existed)" if not has_artifact else "openvino"
        raise ConfigError(f"runtime 'optimized' needs {missing} ; use MURA_RUNTIME=keras")
    return "keras"


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin reports native bf16 (e.g. AVX512-BF16, AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoRunner:
    """The exported variants on OpenVINO's CPU plugin.

    Args:
        xml: the IR file (``model.xml`` next to ``model.bin``).
        names: variant names, in the order of the model's probability columns.
        batch_size: largest batch run at once (bigger inputs are split).
        precision: ``bf16`` (allowed: used when this CPU has it and, with ``pick_faster``, when it is
            faster than float32 here, timed at load) or ``f32``.
        warm_up: run one image through at load (OpenVINO's first-inference set-up), then each
            further batch size up to ``batch_size`` while that fits in ``WARM_UP_BUDGET_S``: a new
            input shape costs a one-off set-up that matters for small images (measured at 64²: 1.8×
            a warm request; at 320² ≤ 1.5×, where warming every size would cost seconds).
        pick_faster: with ``precision="bf16"``, time both precisions at load and keep the faster.
        streams: 1 (one request uses every core: the lowest latency, the default) or the number of
            requests a server runs at once, each on its own stream (``mura serve-ui``; measured at 64²
            on 2 cores: 13.3 against 10.6 studies/s).

    Thread-safe: each thread gets its own infer request, and OpenVINO releases the
    GIL while it computes, so concurrent requests overlap.
    """

    thread_safe = True

    def __init__(
        self,
        xml: Path,
        names: list[str],
        batch_size: int = 8,
        precision: str = "f32",
        warm_up: bool = True,
        pick_faster: bool = True,
        streams: int = 1,
    ) -> None:
        import openvino as ov

        forced = os.environ.get("MURA_PRECISION")
        if forced not in (None, "", "f32", "bf16"):
            raise ConfigError(f"MURA_PRECISION={forced!r}: expected f32 or bf16")
        if precision == "bf16" and not cpu_has_bf16():
            logger.info("this CPU has no native bf16: serving in float32")
            precision = "f32"
        core = ov.Core()
        model = core.read_model(str(xml))
        self.names = list(names)
        self.image_size = int(model.inputs[0].get_partial_shape()[1].get_length())
        self.batch_size = int(batch_size)
        self._local = threading.local()
        candidates = [forced] if forced else (["bf16", "f32"] if precision == "bf16" and pick_faster else [precision])
        cache_key = _precision_cache_key(xml, ov.__version__) if len(candidates) > 1 else ""
        known = _read_precision_cache().get(cache_key)
        if known in candidates:  # measured on this CPU for this model before: no need to time again
            candidates = [known]
        one = np.zeros((1, self.image_size, self.image_size, 1), np.uint8)
        compiled, timings = {}, {}
        for candidate in candidates:
            settings = {"INFERENCE_PRECISION_HINT": candidate, **_scheduling(streams)}
            compiled[candidate] = core.compile_model(model, "CPU", settings)
            if warm_up or len(candidates) > 1:
                request = compiled[candidate].create_infer_request()
                request.infer([one])  # the first inference sets OpenVINO up
                start = time.perf_counter()
                request.infer([one])
                timings[candidate] = time.perf_counter() - start
        self.precision = min(timings, key=timings.__getitem__) if len(candidates) > 1 else candidates[0]
        self.compiled = compiled[self.precision]
        if len(candidates) > 1:
            shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
            logger.info("bf16 allowed; one image takes %s on this CPU: serving %s", shown, self.precision)
            _write_precision_cache(cache_key, self.precision)
        self.n_outputs = len(self.compiled.outputs)
        if self.n_outputs not in (1, 1 + len(self.names)):
            raise ValueError(f"{xml} has {self.n_outputs} outputs; expected 1 or {1 + len(self.names)}")
        if warm_up:
            self._warm_up(timings.get(self.precision, 0.0))

    def _warm_up(self, one_image_s: float) -> None:
        spent = 0.0
        for n in range(1, self.batch_size + 1):
            if n > 1 and spent + n * one_image_s > WARM_UP_BUDGET_S:
                break
            start = time.perf_counter()
            self._infer(np.zeros((n, self.image_size, self.image_size), np.uint8))
            spent += time.perf_counter() - start
            one_image_s = max(one_image_s, (time.perf_counter() - start) / n)

    def _infer(self, pixels: np.ndarray, n_outputs: int = 1) -> list[np.ndarray]:
        """Run one batch; copy out the first ``n_outputs`` outputs (the feature maps only when asked)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer([np.ascontiguousarray(pixels[..., None], dtype=np.uint8)])
        return [np.array(result[self.compiled.outputs[i]]) for i in range(n_outputs)]

    def _check(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f"expected (N, {self.image_size}, {self.image_size}) pixels, got {pixels.shape}")
        return pixels

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """P(abnormal) per image and variant: (N, S, S) uint8 → (N, n_variants) float64."""
        probabilities, _ = self.predict_with_features(pixels, features=False)
        return probabilities

    def predict_with_features(self, pixels: np.ndarray, features: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities and (optionally) each variant's last feature maps, (N, h, w, C) float32."""
        pixels = self._check(pixels)
        if features and self.n_outputs == 1:
            raise ValueError("this optimized model was exported without feature maps")
        probabilities = np.zeros((len(pixels), len(self.names)), np.float64)
        maps: list[list[np.ndarray]] = [[] for _ in self.names]
        for start in range(0, len(pixels), self.batch_size):
            outputs = self._infer(pixels[start : start + self.batch_size], self.n_outputs if features else 1)
            probabilities[start : start + len(outputs[0])] = np.asarray(outputs[0], np.float64).reshape(len(outputs[0]), -1)
            if features:
                for k in range(len(self.names)):
                    maps[k].append(outputs[1 + k])
        return probabilities, [np.concatenate(m) for m in maps] if features else []

    def predict_ensemble(self, pixels: np.ndarray, weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(per_variant, ensemble)`` probabilities for uint8 pixels."""
        from mura.evaluation.ensemble import average_probabilities

        per_variant = self.predict(pixels)
        return per_variant, average_probabilities(per_variant, weights)


def _scheduling(streams: int) -> dict[str, Any]:
    """OpenVINO's scheduling: one stream on every core, or ``streams`` streams for concurrent requests."""
    if streams <= 1:
        return {"PERFORMANCE_HINT": "LATENCY"}
    return {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}


def _precision_cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mura" / "precision.json"


def _precision_cache_key(xml: Path, openvino_version: str) -> str:
    """The CPU model, the OpenVINO version and the model's IR: what decides which precision is faster."""
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
    return f"{cpu}|{os.cpu_count()}|{openvino_version}|{digest}"


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


def describe(runner: Any) -> str:
    """One line for logs: the runtime and its precision."""
    if isinstance(runner, OpenVinoRunner):
        return f"OpenVINO CPU {runner.precision}"
    return "Keras"

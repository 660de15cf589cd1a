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
serve with it start in about a second instead of ten.

Precisions. ``register`` exports the float32 IR and, with ``register.int8``, an
int8 IR quantized by NNCF on training images (``model_int8.xml``); which one
serves is :mod:`mura.runtime.numeric_precision`'s choice. Grad-CAM always comes from the
float32 model, so heatmaps stay exact whatever serves the probabilities (an int8
model's feature maps moved normalized heatmaps by up to 0.2).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

from mura.config import ServingRuntime
from mura.errors import ConfigError
from mura.runtime.numeric_precision import (
    INT8_XML,
    MODEL_XML,
    available_precisions,
    cache_base,
    choose_precision,
    forced_precision,
)
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)

__all__ = [
    "HEADS_FILE",
    "OPTIMIZED_ARTIFACT",
    "RUNTIMES",
    "OpenVinoRunner",
    "Runner",
    "compile_cache_dir",
    "prune_compile_cache",
    "resolve_runtime",
]

RUNTIMES: tuple[ServingRuntime, ...] = typing.get_args(ServingRuntime)
OPTIMIZED_ARTIFACT = "optimized"  # artifact key: a folder holding MODEL_XML (+ .bin), maybe INT8_XML, and HEADS_FILE
HEADS_FILE = "heads.npz"
WARM_UP_BUDGET_S = 1.5  # at load, warm further batch sizes while this many seconds suffice


class Runner(Protocol):
    """What the service needs of a runtime: :class:`OpenVinoRunner` here, ``mura.modeling.inference.VariantRunner`` (Keras)."""

    thread_safe: ClassVar[bool]  # several studies may be predicted at once
    image_size: int  # the side of the square uint8 images it takes

    @property
    def precision(self) -> str:
        """``f32``, ``bf16`` or ``int8``: the precision that answers."""
        ...

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """P(abnormal) per image and variant: (N, S, S) uint8 → (N, n_variants) float64."""
        ...

    def prepare_heatmaps(self) -> None:
        """Make the heatmap path ready now (servers call it at start)."""
        ...

    @property
    def description(self) -> str:
        """One line for logs: the runtime and its precision."""
        ...


def resolve_runtime(configured: str, optimized_dir: Path | None) -> Literal["optimized", "keras"]:
    """The runtime that serves: ``$MURA_RUNTIME`` or the configured one, ``auto`` resolved.

    Raises:
        ConfigError: an unknown runtime, or ``optimized`` without its artifact or without OpenVINO.
    """
    wanted = runtime_settings().runtime or configured
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


class OpenVinoRunner:
    """The exported variants on OpenVINO's CPU plugin.

    Args:
        optimized_dir: the ``optimized`` artifact (``model.xml``, maybe ``model_int8.xml``).
        names: variant names, in the order of the model's probability columns.
        batch_size: largest batch run at once (bigger inputs are split).
        allowed: precisions proven harmless for this model (``ServingConfig.allowed_precisions``);
            float32 always is. The fastest of those this CPU runs is served (with ``pick_faster``).
        warm_up: run one image through at load (OpenVINO's first-inference set-up), then each
            further batch size up to ``batch_size`` while that fits in ``WARM_UP_BUDGET_S``: a new
            input shape costs a one-off set-up that matters for small images (measured at 64²: 1.8×
            a warm request; at 320² ≤ 1.5×, where warming every size would cost seconds).
        pick_faster: time every available allowed precision at load and keep the fastest; without
            it, the most reduced one (int8, then bf16) serves.
        streams: 1 (one request uses every core: the lowest latency, the default) or the number of
            requests a server runs at once, each on its own stream (``mura serve-ui``; measured at 64²
            on 2 cores: 13.3 against 10.6 studies/s).
        force: serve this precision (``""``: none forced); default ``$MURA_PRECISION``.
        compile_cache: keep the compiled models in OpenVINO's cache (:func:`compile_cache_dir`) for
            later starts; ``register``'s checks turn it off (this machine will likely never serve
            the model they compile, and each precision's blob is the size of its weights).

    Thread-safe: each thread gets its own infer request, and OpenVINO releases the
    GIL while it computes, so concurrent requests overlap.
    """

    thread_safe: ClassVar[bool] = True

    def __init__(
        self,
        optimized_dir: Path,
        names: list[str],
        batch_size: int = 8,
        allowed: Sequence[str] = ("f32",),
        warm_up: bool = True,
        pick_faster: bool = True,
        streams: int = 1,
        force: str | None = None,
        compile_cache: bool = True,
    ) -> None:
        import openvino as ov  # lazy: optional runtime: only when exporting or serving with it

        self.optimized_dir = Path(optimized_dir)
        forced = forced_precision(self.optimized_dir, force)
        self._core = ov.Core()
        self._cache_dir = compile_cache_dir() if compile_cache else None
        self._cache_budget = _cache_budget_bytes() if self._cache_dir is not None else 0
        self._started = time.time()  # the cache entries this runner writes or reads are not pruned
        if self._cache_dir is not None:
            self._core.set_property({"CACHE_DIR": str(self._cache_dir)})
        self._streams = streams
        self._lock = threading.Lock()
        self.names = list(names)
        self.batch_size = int(batch_size)
        self._local = threading.local()
        available = available_precisions(self.optimized_dir, allowed)
        candidates = [forced] if forced else (available if pick_faster else available[-1:])
        self.precision, compiled, timings = choose_precision(
            self.optimized_dir, candidates, self._compile, ov.__version__, time_all=warm_up
        )
        self._prune_cache()
        self.compiled = compiled[self.precision]
        self.image_size = int(self.compiled.inputs[0].get_partial_shape()[1].get_length())
        # Grad-CAM reads float32 feature maps (exact heatmaps); compiled when first needed, or by prepare_heatmaps().
        self._features_compiled = self.compiled if self.precision == "f32" else compiled.get("f32")
        self.n_outputs = len(self.compiled.outputs)
        if self.n_outputs not in (1, 1 + len(self.names)):
            raise ValueError(f"{optimized_dir} has {self.n_outputs} outputs; expected 1 or {1 + len(self.names)}")
        if warm_up:
            self._warm_up(timings.get(self.precision, 0.0), skip_one=self.precision in timings)

    def _compile(self, precision: str) -> Any:
        """Compile the IR of ``precision`` (int8 has its own IR; its float ops run in float32).

        Compiled from the file with OpenVINO's model cache (``CACHE_DIR``, :func:`compile_cache_dir`):
        a later start imports the compiled blob instead of compiling again (the demo's four
        variants: 1.3 s → 0.4 s per precision on a 2-core EPYC).
        """
        xml = self.optimized_dir / (INT8_XML if precision == "int8" else MODEL_XML)
        hint = "f32" if precision == "int8" else precision
        settings = {"INFERENCE_PRECISION_HINT": hint, **_scheduling(self._streams)}
        return self._core.compile_model(str(xml), "CPU", settings)

    def _prune_cache(self) -> None:
        """Keep the compile cache within its budget, once this runner's compiles are done (its own entries stay)."""
        if self._cache_dir is not None:
            prune_compile_cache(self._cache_dir, self._cache_budget, keep_since=self._started - 2)  # 2 s: timestamp granularity

    @property
    def description(self) -> str:
        """One line for logs: the runtime and its precision."""
        return f"OpenVINO CPU {self.precision}"

    def prepare_heatmaps(self) -> None:
        """Compile and warm the float32 model Grad-CAM uses, if it is not the served one (servers call it at load)."""
        with self._lock:
            if self._features_compiled is None:
                self._features_compiled = self._compile("f32")
                self._prune_cache()
                one = np.zeros((1, self.image_size, self.image_size, 1), np.uint8)
                self._features_compiled.create_infer_request().infer([one])

    def _warm_up(self, one_image_s: float, skip_one: bool) -> None:
        spent = 0.0
        for n in range(2 if skip_one else 1, self.batch_size + 1):  # one image already ran while timing
            if n > 1 and spent + n * one_image_s > WARM_UP_BUDGET_S:
                break
            start = time.perf_counter()
            self._infer(np.zeros((n, self.image_size, self.image_size), np.uint8))
            spent += time.perf_counter() - start
            one_image_s = max(one_image_s, (time.perf_counter() - start) / n)

    def _infer(self, pixels: np.ndarray, n_outputs: int = 1) -> list[np.ndarray]:
        """Run one batch; copy out the first ``n_outputs`` outputs (the feature maps only when asked).

        With feature maps the float32 model runs (probabilities and heatmaps from one exact pass).
        """
        features = n_outputs > 1
        if features and self._features_compiled is None:
            self.prepare_heatmaps()
        compiled: Any = self._features_compiled if features else self.compiled
        key = "features_request" if features and compiled is not self.compiled else "request"
        request = getattr(self._local, key, None)
        if request is None:
            request = compiled.create_infer_request()
            setattr(self._local, key, request)
        result = request.infer([np.ascontiguousarray(pixels[..., None], dtype=np.uint8)])
        return [np.array(result[compiled.outputs[i]]) for i in range(n_outputs)]

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


def _scheduling(streams: int) -> dict[str, Any]:
    """OpenVINO's scheduling: one stream on every core, or ``streams`` streams for concurrent requests."""
    if streams <= 1:
        return {"PERFORMANCE_HINT": "LATENCY"}
    return {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}


def prune_compile_cache(directory: Path, budget_bytes: int, keep_since: float | None = None) -> list[Path]:
    """Drop the least recently used compiled models until the cache holds at most ``budget_bytes``.

    OpenVINO never removes an entry, and each one is the size of its model's weights (a
    four-variant ensemble: ~450 MB in float32, ~120 MB in int8), so every new model version
    or setting served on a machine would add to it for good. Recency is a blob's last access
    or write, whichever is later; the most recent entry, and every entry used since
    ``keep_since`` (a server's own, just written or read), are always kept. A server whose entry
    was dropped compiles again at its next start.

    Returns:
        The blobs removed.
    """
    entries = []
    for blob in Path(directory).glob("*.blob"):
        try:
            stat = blob.stat()
        except OSError:  # removed by another process meanwhile
            continue
        entries.append((max(stat.st_atime, stat.st_mtime), stat.st_size, blob))
    entries.sort(reverse=True)  # most recent first
    total = sum(size for _, size, _ in entries)
    kept = max(1, sum(1 for used, _, _ in entries if keep_since is not None and used >= keep_since))
    removed = []
    for _, size, blob in entries[kept:][::-1]:  # oldest first
        if total <= budget_bytes:
            break
        try:
            blob.unlink()
        except OSError:
            continue
        total -= size
        removed.append(blob)
    if removed:
        logger.info(
            "OpenVINO cache %s: dropped %d least recently used compiled models (limit %d MB)",
            directory,
            len(removed),
            budget_bytes // 2**20,
        )
    return removed


def _cache_budget_bytes() -> int:
    """``$MURA_OV_CACHE_MAX_MB`` (default ``OV_CACHE_MAX_MB``) in bytes."""
    return int(runtime_settings().ov_cache_max_mb * 2**20)


def compile_cache_dir() -> Path | None:
    """OpenVINO's compiled-model cache: ``$MURA_OV_CACHE``, else ``~/.cache/mura/openvino``; None when off or unwritable.

    ``MURA_OV_CACHE=off`` turns it off. OpenVINO keys each entry by the model's content, the
    device and the settings, so a new model version or OpenVINO release compiles afresh.
    """
    wanted = runtime_settings().ov_cache
    if wanted == "off":
        return None
    path = Path(wanted) if wanted else cache_base() / "openvino"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home: compile every start, as before
        return None
    return path if os.access(path, os.W_OK) else None

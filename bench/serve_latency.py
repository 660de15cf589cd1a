"""Serving a 3-view study through all four variants: Keras vs the optimized runtime, in one run (2 CPU cores).

Measured in the same run, on the same random-init variants (the compute is the same as trained ones):
(a) the Keras/TensorFlow path of the served model (the baseline), (b) OpenVINO float32, (c) OpenVINO bf16
(when the CPU has it), (d) OpenVINO int8 (NNCF post-training quantization, calibrated on random images:
the timing does not depend on them), (e) as served with all three allowed (the fastest, timed at load):
load time, first request, warm p50, max |Δp| against Keras; the first request of
every batch size up to the serving batch against a warm one; `mlflow models serve` and `mura serve-model`
cold start (process start → first answer) of the model as `register` logs it (the `.keras` files as run files) against the
same model with the `.keras` files among the pyfunc's artifacts (how it was logged before), and HTTP p50
against in-process; `mura predict` on one study, end to end, for both layouts.
Appends to bench/RESULTS.md.

Usage: python bench/serve_latency.py [--size 320] [--repeats 15]
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

from mura.deploy.processes import free_port  # noqa: E402

VARIANTS = {
    "densenet169_a": "densenet169",
    "densenet169_b": "densenet169",
    "resnet101_a": "resnet101",
    "resnet101_b": "resnet101",
}
KERAS_LABEL = "Keras/TensorFlow (baseline)"
SERVED_LABEL = "OpenVINO, f32/bf16/int8 allowed: the fastest, timed at load (as served)"
# The registered versions of the run: the pyfunc as `register` logs it, and the layout before.
LAYOUTS = {"`.keras` as run files (as `register` logs it)": 1, "`.keras` among the pyfunc's artifacts (before)": 2}


@dataclass
class Built:
    """The random-init variants, their export and the times to make it."""

    folder: Path
    paths: dict[str, str]
    optimized: Path
    export_s: float  # float32 export and int8 quantization, as register does them


@dataclass
class Served:
    """What the command-line and HTTP measurements of one registered layout gave."""

    cold_http: float
    cold_mura: float
    http_p50: float
    predict_s: float


def _study(n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(0)
    views = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (512, 400)).astype(np.uint8)).save(buffer, "PNG")
        views.append(buffer.getvalue())
    return views


def _frame(views: list[bytes]) -> pd.DataFrame:
    return pd.DataFrame({"image": [base64.b64encode(v).decode() for v in views], "study_id": ["s"] * len(views)})


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _timed(call, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def build(size: int, calibration: int, folder: Path) -> Built:
    """Save the four random-init variants, export them as `register` does and quantize to int8."""
    import keras

    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.packaging.export import export_optimized
    from mura.runtime.runners import OPTIMIZED_ARTIFACT

    paths = {}
    for k, (name, arch) in enumerate(VARIANTS.items()):
        keras.utils.set_random_seed(k)
        paths[name] = str(folder / f"{name}.keras")
        build_model(ModelSpec(arch), size, "none", None, seed=k).save(paths[name])
    images = np.random.default_rng(1).integers(0, 256, (calibration, size, size)).astype(np.uint8)
    start = time.perf_counter()
    optimized = export_optimized({n: Path(p) for n, p in paths.items()}, folder / OPTIMIZED_ARTIFACT, calibration=images).dir
    return Built(folder, paths, optimized, time.perf_counter() - start)


def configs(size: int, batch: int, variants: list[str]) -> tuple[Any, Any]:
    """The Keras configuration (the baseline) and the served one (optimized, every precision allowed)."""
    from mura.runtime.served_config import ServingConfig

    base = ServingConfig(
        variants=tuple(variants),
        variant_weights={n: 1.0 for n in variants},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=size,
        resize="stretch",
        max_pixels=40_000_000,
        serve_batch_size=batch,
        synthetic_data=True,
        runtime="keras",
    )
    return base, dataclasses.replace(base, runtime="optimized", allowed_precisions=("f32", "bf16", "int8"))


def in_process(
    built: Built, keras_config: Any, served: Any, frame: pd.DataFrame, repeats: int
) -> tuple[list[str], dict[str, float], str]:
    """Every path through ``predict_frame``: table rows, p50 per path, and the served path's label."""
    from mura.runtime.numeric_precision import cpu_has_bf16
    from mura.runtime.service import EnsembleService

    setups = {KERAS_LABEL: (keras_config, "")}  # label: (config, MURA_PRECISION)
    setups["OpenVINO float32"] = (served, "f32")
    if cpu_has_bf16():
        setups["OpenVINO bf16 (forced)"] = (served, "bf16")
    setups["OpenVINO int8 (forced)"] = (served, "int8")
    setups[SERVED_LABEL] = (served, "")
    rows, results, reference, shown = [], {}, None, ""
    for label, (config, forced) in setups.items():
        os.environ["MURA_PRECISION"] = forced
        start = time.perf_counter()
        service = EnsembleService(built.paths, config, built.optimized)
        load_s = time.perf_counter() - start
        shown = label if config.runtime == "keras" else f"{label} [serves {service.runner.precision}]"
        start = time.perf_counter()
        first = service.predict_frame(frame)
        first_s = time.perf_counter() - start
        warm = _timed(lambda s=service: s.predict_frame(frame), repeats)
        probs = first["probability"].to_numpy()
        reference = probs if reference is None else reference
        results[label] = _p50(warm)
        rows.append(
            f"| {shown} | {load_s:.2f} s | {first_s:.3f} s | {_p50(warm):.3f} s | {np.percentile(warm, 90):.3f} s | "
            f"{np.abs(probs - reference).max():.1e} |"
        )
    os.environ["MURA_PRECISION"] = ""
    return rows, results, shown


def first_requests(
    built: Built, served: Any, batch: int, frame: pd.DataFrame, repeats: int
) -> tuple[list[tuple[int, float, float]], float]:
    """The first request of each batch size after start against a warm one (a fresh service); in-process p50."""
    from mura.runtime.service import EnsembleService

    fast = EnsembleService(built.paths, served, built.optimized)
    batch_frame = _frame(_study(batch))
    ratios = []
    for n in range(1, batch + 1):
        request = batch_frame.iloc[:n]
        start = time.perf_counter()
        fast.predict_frame(request)
        first_n = time.perf_counter() - start
        ratios.append((n, first_n, _p50(_timed(lambda r=request: fast.predict_frame(r), 3))))
    return ratios, _p50(_timed(lambda: fast.predict_frame(frame), repeats))


def register_layouts(built: Built, served: Any) -> str:
    """Register the pyfunc twice in a local store (see ``LAYOUTS``); the store's URI.

    Version 1 is logged as ``register`` logs it (the ``.keras`` files as the run's ``keras/`` files, the
    config pointing at them); version 2 keeps them among the pyfunc's artifacts, as before.
    """
    import mlflow

    import mura
    from mura.packaging.register import KERAS_RUN_PATH
    from mura.runtime.runners import OPTIMIZED_ARTIFACT
    from mura.runtime.served_config import CONFIG_ARTIFACT

    package = Path(mura.__file__).parent
    store = f"sqlite:///{built.folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    experiment = mlflow.create_experiment("serve-latency", artifact_location=(built.folder / "artifacts").as_uri())
    config_file = built.folder / f"{CONFIG_ARTIFACT}.json"
    for as_run_files in (True, False):
        with mlflow.start_run(experiment_id=experiment) as run:
            artifacts = {CONFIG_ARTIFACT: str(config_file), OPTIMIZED_ARTIFACT: str(built.optimized)}
            if as_run_files:
                for path in built.paths.values():
                    mlflow.log_artifact(path, artifact_path=KERAS_RUN_PATH)
                config = dataclasses.replace(served, keras_variants_uri=f"runs:/{run.info.run_id}/{KERAS_RUN_PATH}")
            else:
                artifacts |= built.paths
                config = served
            config.save(config_file)
            mlflow.pyfunc.log_model(
                name="model",
                python_model=str(package / "runtime" / "pyfunc.py"),
                code_paths=[str(package)],
                artifacts=artifacts,
                model_config={"streams": 1, "warm_up": True},
                registered_model_name="mura-ensemble",
            )
    return store


def _env(store: str) -> dict[str, str]:
    return dict(
        os.environ,
        MLFLOW_TRACKING_URI=store,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )


def cold_start(server: list[str], store: str, frame: pd.DataFrame, repeats: int) -> tuple[float, float]:
    """Start ``server`` (its command; ``{port}`` is replaced): process start → first answer, then the HTTP p50."""
    port = free_port()
    body = json.dumps({"dataframe_records": frame.to_dict("records")}).encode()

    def request() -> bytes:
        call = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        return bytes(urllib.request.urlopen(call, timeout=120).read())

    start = time.perf_counter()
    process = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in server],
        env=_env(store),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while True:
            try:
                request()
                break
            except OSError:
                if time.perf_counter() - start > 300:
                    raise
                time.sleep(0.05)
        return time.perf_counter() - start, _p50(_timed(request, repeats))
    finally:
        os.killpg(process.pid, 15)
        process.wait()


def serve_and_predict(store: str, version: int, frame: pd.DataFrame, study_dir: Path, repeats: int) -> Served:
    """One version: `mlflow models serve` and `mura serve-model` cold starts, HTTP p50; `mura predict` end to end."""
    model = f"models:/mura-ensemble/{version}"
    mlflow_serve = ["mlflow", "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}"]
    cold_http, http = cold_start(mlflow_serve, store, frame, repeats)
    cold_mura, _ = cold_start(["mura", "serve-model", "-m", model, "-H", "127.0.0.1", "-p", "{port}"], store, frame, 1)
    start = time.perf_counter()
    subprocess.run(["mura", "predict", str(study_dir), "--model", model], env=_env(store), check=True, capture_output=True)
    return Served(cold_http, cold_mura, http, time.perf_counter() - start)


def record(
    args: argparse.Namespace,
    built: Built,
    rows: list[str],
    results: dict[str, float],
    served_label: str,
    ratios: list[tuple[int, float, float]],
    inproc: float,
    layouts: dict[str, Served],
) -> None:
    """Append the run's tables to bench/RESULTS.md."""
    worst = max(first / warm for _, first, warm in ratios)
    now = layouts[next(iter(LAYOUTS))]
    append(
        f"serving, 3-view study, 4 variants at {args.size}² (random init), Keras vs optimized runtime",
        [
            f"Export to OpenVINO and int8 quantization on {args.calibration} images (register, one process per core): "
            f"{built.export_s:.1f} s. Served precision below: {served_label}.",
            "",
            "| path (in-process `predict_frame`) | load | first request | p50 warm | p90 | max abs dp vs Keras |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Speed-up of the served optimized runtime over Keras: {results[KERAS_LABEL] / results[SERVED_LABEL]:.2f}x.",
            "",
            "| batch size | first request after start | warm | ratio |",
            "|---|---|---|---|",
            *[f"| {n} | {first:.3f} s | {warm:.3f} s | {first / warm:.2f} |" for n, first, warm in ratios],
            f"Worst first/warm ratio: {worst:.2f} (target <= 1.5).",
            "",
            "| registered model | process start → first answer: `mlflow models serve` | `mura serve-model` "
            "| `mura predict`, one 3-view study |",
            "|---|---|---|---|",
            *[f"| {label} | {s.cold_http:.1f} s | {s.cold_mura:.1f} s | {s.predict_s:.1f} s |" for label, s in layouts.items()],
            "",
            f"HTTP p50 per study / in-process p50: {now.http_p50:.3f} s / {inproc:.3f} s ({now.http_p50 / inproc - 1:+.0%}).",
        ],
    )


def main() -> None:
    """Build and export the variants, measure every path, record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8, help="serving batch (register.serve_batch_size)")
    parser.add_argument("--calibration", type=int, default=32, help="int8 calibration images")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mura-bench-"))
    try:
        built = build(args.size, args.calibration, folder)
        views = _study()
        frame = _frame(views)
        keras_config, served = configs(args.size, args.batch, list(built.paths))
        rows, results, served_label = in_process(built, keras_config, served, frame, args.repeats)
        ratios, inproc = first_requests(built, served, args.batch, frame, args.repeats)
        store = register_layouts(built, served)
        study_dir = folder / "study"
        study_dir.mkdir()
        for i, view in enumerate(views):
            (study_dir / f"image{i + 1}.png").write_bytes(view)
        layouts = {label: serve_and_predict(store, version, frame, study_dir, args.repeats) for label, version in LAYOUTS.items()}
        record(args, built, rows, results, served_label, ratios, inproc, layouts)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # ~1 GB of models and artifacts


if __name__ == "__main__":
    main()

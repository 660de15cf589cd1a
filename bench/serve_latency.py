"""Serving a 3-view study through all four variants: Keras vs the optimized runtime, in one run (2 CPU cores).

Measured in the same run, on the same random-init variants (the compute is the same as trained ones):
(a) the Keras/TensorFlow path of the served model (the baseline), (b) OpenVINO float32, (c) OpenVINO bf16
(when the CPU has it), (d) OpenVINO int8 (NNCF post-training quantization, calibrated on random images:
the timing does not depend on them), (e) as served with all three allowed (the fastest, timed at load):
load time, first request, warm p50, max |Δp| against Keras; the first request of
every batch size up to the serving batch against a warm one; `mlflow models serve` cold start (process
start → first answer) and HTTP p50 against in-process; `mura predict` on one study, end to end.
Appends to bench/RESULTS.md.

Usage: python bench/serve_latency.py [--size 320] [--repeats 15]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

VARIANTS = {
    "densenet169_a": "densenet169",
    "densenet169_b": "densenet169",
    "resnet101_a": "resnet101",
    "resnet101_b": "resnet101",
}


def _study(n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(0)
    views = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (512, 400)).astype(np.uint8)).save(buffer, "PNG")
        views.append(buffer.getvalue())
    return views


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def _timed(call, repeats: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    """Build and export the variants, measure every path, record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch", type=int, default=8, help="serving batch (register.serve_batch_size)")
    parser.add_argument("--calibration", type=int, default=32, help="int8 calibration images")
    args = parser.parse_args()
    import dataclasses

    import keras
    import mlflow
    import pandas as pd

    import mura
    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.serving.config import CONFIG_ARTIFACT, ServingConfig
    from mura.serving.export import export_optimized, quantize_int8
    from mura.serving.precision import cpu_has_bf16
    from mura.serving.runtime import OPTIMIZED_ARTIFACT
    from mura.serving.service import EnsembleService

    tmp = Path(tempfile.mkdtemp(prefix="mura-bench-"))
    paths = {}
    for k, (name, arch) in enumerate(VARIANTS.items()):
        keras.utils.set_random_seed(k)
        paths[name] = str(tmp / f"{name}.keras")
        build_model(ModelSpec(arch), args.size, "none", None, seed=k).save(paths[name])
    start = time.perf_counter()
    optimized = export_optimized({n: Path(p) for n, p in paths.items()}, tmp / OPTIMIZED_ARTIFACT)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    rng = np.random.default_rng(1)
    quantize_int8(optimized, rng.integers(0, 256, (args.calibration, args.size, args.size)).astype(np.uint8))
    quantize_s = time.perf_counter() - start
    views = _study()
    frame = pd.DataFrame({"image": [base64.b64encode(v).decode() for v in views], "study_id": ["s"] * 3})
    base = ServingConfig(
        variants=tuple(paths),
        variant_weights={n: 1.0 for n in paths},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=args.size,
        resize="stretch",
        max_pixels=40_000_000,
        serve_batch_size=args.batch,
        synthetic_data=True,
        runtime="keras",
    )
    served = dataclasses.replace(base, runtime="optimized", allowed_precisions=("f32", "bf16", "int8"))
    # label: (config, MURA_PRECISION)
    setups = {"Keras/TensorFlow (baseline)": (dataclasses.replace(base, runtime="keras"), "")}
    setups["OpenVINO float32"] = (served, "f32")
    if cpu_has_bf16():
        setups["OpenVINO bf16 (forced)"] = (served, "bf16")
    setups["OpenVINO int8 (forced)"] = (served, "int8")
    setups["OpenVINO, f32/bf16/int8 allowed: the fastest, timed at load (as served)"] = (served, "")
    rows, reference, results = [], None, {}
    for label, (config, forced) in setups.items():
        os.environ["MURA_PRECISION"] = forced
        start = time.perf_counter()
        service = EnsembleService(paths, config, optimized)
        load_s = time.perf_counter() - start
        shown = label if config.runtime == "keras" else f"{label} [serves {service.runner.precision}]"
        start = time.perf_counter()
        first = service.predict_frame(frame)
        first_s = time.perf_counter() - start
        warm = _timed(lambda s=service: s.predict_frame(frame), args.repeats)
        probs = first["probability"].to_numpy()
        reference = probs if reference is None else reference
        results[label] = _p50(warm)
        rows.append(
            f"| {shown} | {load_s:.2f} s | {first_s:.3f} s | {_p50(warm):.3f} s | {np.percentile(warm, 90):.3f} s | "
            f"{np.abs(probs - reference).max():.1e} |"
        )
    os.environ["MURA_PRECISION"] = ""
    fast_label = shown
    fast_config = served
    # First request of each batch size after start, against a warm one (fresh service).
    fast = EnsembleService(paths, fast_config, optimized)
    batch_views = [base64.b64encode(v).decode() for v in _study(args.batch)]
    ratios = []
    for n in range(1, args.batch + 1):
        request = pd.DataFrame({"image": batch_views[:n], "study_id": ["s"] * n})
        start = time.perf_counter()
        fast.predict_frame(request)
        first_n = time.perf_counter() - start
        warm_n = _p50(_timed(lambda r=request: fast.predict_frame(r), 3))
        ratios.append((n, first_n, warm_n))
    inproc = _p50(_timed(lambda: fast.predict_frame(frame), args.repeats))

    # The pyfunc as `register` logs it (models-from-code), registered in a local store.
    fast_config.save(tmp / f"{CONFIG_ARTIFACT}.json")
    package = Path(mura.__file__).parent
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    experiment = mlflow.create_experiment("serve-latency", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "serving" / "pyfunc.py"),
            code_paths=[str(package)],
            artifacts={CONFIG_ARTIFACT: str(tmp / f"{CONFIG_ARTIFACT}.json"), OPTIMIZED_ARTIFACT: str(optimized), **paths},
            model_config={"streams": 1, "warm_up": True},
            registered_model_name="mura-ensemble",
        )
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=store,
        MLFLOW_DISABLE_TELEMETRY="true",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    port = _free_port()
    body = json.dumps({"dataframe_records": frame.to_dict("records")}).encode()

    def request() -> bytes:
        call = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        return urllib.request.urlopen(call, timeout=120).read()

    start = time.perf_counter()
    server = subprocess.Popen(
        [
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/mura-ensemble/1",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
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
                time.sleep(0.1)
        cold_http = time.perf_counter() - start
        http = _p50(_timed(request, args.repeats))
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    study_dir = tmp / "study"
    study_dir.mkdir()
    for i, view in enumerate(views):
        (study_dir / f"image{i + 1}.png").write_bytes(view)
    start = time.perf_counter()
    subprocess.run(
        ["mura", "predict", str(study_dir), "--model", "models:/mura-ensemble/1"], env=env, check=True, capture_output=True
    )
    predict_s = time.perf_counter() - start

    keras_p50 = results["Keras/TensorFlow (baseline)"]
    worst = max(first / warm for _, first, warm in ratios)
    append(
        f"serving, 3-view study, 4 variants at {args.size}² (random init), Keras vs optimized runtime",
        [
            f"Export to OpenVINO (register): {export_s:.1f} s; int8 quantization on {args.calibration} images: "
            f"{quantize_s:.1f} s. Served precision below: {fast_label}.",
            "",
            "| path (in-process `predict_frame`) | load | first request | p50 warm | p90 | max abs dp vs Keras |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"Speed-up of the served optimized runtime over Keras in this run: {keras_p50 / results[label]:.2f}x.",
            "",
            "| batch size | first request after start | warm | ratio |",
            "|---|---|---|---|",
            *[f"| {n} | {first:.3f} s | {warm:.3f} s | {first / warm:.2f} |" for n, first, warm in ratios],
            f"Worst first/warm ratio: {worst:.2f} (target <= 1.5).",
            "",
            "| cold start and HTTP | value |",
            "|---|---|",
            f"| `mlflow models serve -m models:/mura-ensemble/1`, process start → first answer | {cold_http:.1f} s |",
            f"| HTTP p50 per study / in-process p50 | {http:.3f} s / {inproc:.3f} s ({http / inproc - 1:+.0%}) |",
            f"| `mura predict` on one 3-view study, end to end | {predict_s:.1f} s |",
        ],
    )
    shutil.rmtree(tmp, ignore_errors=True)  # ~1 GB of models and artifacts


if __name__ == "__main__":
    main()

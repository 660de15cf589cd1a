"""Load test of the web interface: N concurrent clients posting 1-view studies for a fixed time.

Starts ``mura serve-ui`` on 127.0.0.1 (on the given model, or on a freshly registered
random-init model of the demo's size, exported to the optimized runtime as ``register`` does)
once per set-up — a runtime and how heatmaps are drawn: ``inline`` (every answer draws them, as
the page asked before) or ``lazy`` (the page's default: the answer carries a URL per view, drawn
when the user shows them; here never) — in the same run, runs the clients, samples the server's
resident memory, and appends p50/p95/p99, throughput, errors and RSS (start/end) to
bench/RESULTS.md. Traffic goes to 127.0.0.1 only and stops by itself.

Usage: python bench/web_load.py [--clients 8] [--seconds 60] [--setups keras:inline,optimized:inline,optimized:lazy]
       [--tracking-uri URI --model URI]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _multipart(data: bytes, heatmaps: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="heatmaps"\r\n\r\n{heatmaps}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="view.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _register_random(size: int, store: Path) -> tuple[str, str]:
    """Register a random-init 4-variant ensemble (demo architecture and size) in a temp store."""

    import keras
    import mlflow

    import mura
    from mura.config import AugmentParams, ModelSpec
    from mura.modeling.models import build_model
    from mura.packaging.export import export_optimized
    from mura.runtime.runners import OPTIMIZED_ARTIFACT
    from mura.runtime.served_config import CONFIG_ARTIFACT, ServingConfig

    paths = {}
    for k, (name, arch) in enumerate(
        {
            "densenet169_a": "densenet169",
            "densenet169_b": "densenet169",
            "resnet101_a": "resnet101",
            "resnet101_b": "resnet101",
        }.items()
    ):
        keras.utils.set_random_seed(k)
        paths[name] = str(store / f"{name}.keras")
        build_model(ModelSpec(arch), size, "none", AugmentParams(), seed=k).save(paths[name])
    ServingConfig(
        variants=tuple(paths),
        variant_weights={n: 1.0 for n in paths},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=size,
        resize="stretch",
        max_pixels=40_000_000,
        serve_batch_size=8,
        synthetic_data=True,
        runtime="auto",
        allowed_precisions=("f32", "bf16", "int8"),  # as a registered model that passed the check; heatmaps: float32
    ).save(store / "config.json")
    calibration = np.random.default_rng(1).integers(0, 256, (16, size, size)).astype(np.uint8)
    optimized = export_optimized({n: Path(p) for n, p in paths.items()}, store / OPTIMIZED_ARTIFACT, calibration=calibration).dir
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    package = Path(mura.__file__).parent
    experiment = mlflow.create_experiment("web-load", artifact_location=(store / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "runtime" / "pyfunc.py"),
            code_paths=[str(package)],
            artifacts={CONFIG_ARTIFACT: str(store / "config.json"), OPTIMIZED_ARTIFACT: str(optimized), **paths},
            model_config={"streams": 1},
            registered_model_name="mura-ensemble",
        )
    return uri, "models:/mura-ensemble/1"


def main() -> None:
    """Start the UI, load it, record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--size", type=int, default=64, help="image size of the random model when none is given")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument(
        "--setups",
        default="keras:inline,optimized:inline,optimized:lazy",
        help="comma-separated MURA_RUNTIME:heatmaps pairs to compare (heatmaps: inline, lazy or none)",
    )
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="mura-web-load-"))
    uri, model = (args.tracking_uri, args.model) if args.model else _register_random(args.size, store)
    setups = [tuple(setup.split(":")) for setup in args.setups.split(",")]
    rows = [_load(runtime, heatmaps, uri, model, args.clients, args.seconds) for runtime, heatmaps in setups]
    append(
        f"web UI load: {args.clients} clients x {args.seconds:.0f} s, 1-view studies ({model}, {args.size}²)",
        [
            "| runtime | heatmaps | requests | errors | throughput | p50 | p95 | p99 | RSS start | RSS end | RSS trend |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Keras serves one study at a time (an asyncio gate of 1); the optimized runtime runs one study per core "
            "at once (`mura serve-ui --concurrency`). inline: every answer draws the heatmaps (the page before); lazy: "
            "the answer names where each view's heatmap is drawn when the user shows it (the page now; none asked here).",
        ],
    )
    shutil.rmtree(store, ignore_errors=True)


def _load(runtime: str, heatmaps: str, uri: str, model: str, clients: int, seconds: float) -> str:
    """One load run of ``mura serve-ui`` with ``MURA_RUNTIME=runtime``, posting ``heatmaps``; returns its table row."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", MURA_RUNTIME=runtime)
    server = subprocess.Popen(
        [sys.executable, "-m", "mura.cli", "serve-ui", "--model", model, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (512, 400)).astype(np.uint8)).save(buffer, "PNG")
    body, content_type = _multipart(buffer.getvalue(), heatmaps)

    def post() -> None:
        request = urllib.request.Request(f"{url}/api/predict", data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()

    try:
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        post()  # warm-up (traces the model)
        rss_start = _rss_mb(server.pid)
        latencies: list[float] = []
        errors: list[str] = []
        samples: list[float] = []
        stop = time.time() + seconds

        def client() -> None:
            while time.time() < stop:
                t0 = time.perf_counter()
                try:
                    post()
                    latencies.append(time.perf_counter() - t0)
                except Exception as exc:  # counted, reported
                    errors.append(type(exc).__name__)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            samples.append(_rss_mb(server.pid))
            time.sleep(1)
        elapsed = time.perf_counter() - start
        rss_end = _rss_mb(server.pid)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    lat = np.array(latencies) * 1000
    third = max(len(samples) // 3, 1)
    trend = np.mean(samples[-third:]) - np.mean(samples[:third]) if samples else float("nan")
    return (
        f"| {runtime} | {heatmaps} | {len(lat)} | {len(errors)} | {len(lat) / elapsed:.2f} req/s | "
        f"{np.percentile(lat, 50):.0f} ms | {np.percentile(lat, 95):.0f} ms | {np.percentile(lat, 99):.0f} ms | "
        f"{rss_start:.0f} MiB | {rss_end:.0f} MiB | {trend:+.0f} MiB |"
    )


if __name__ == "__main__":
    main()

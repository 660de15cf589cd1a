"""Serving latency for a 3-view study through all four variants (320², 2 CPU cores by default).

(a) naive: each variant's ``model.predict`` called per image (12 calls per study);
(b) the served model in-process (decode + the four variants in one compiled batched call);
(c) over HTTP via ``mlflow models serve`` on 127.0.0.1; plus cold start (process start → first answer).
Random-init weights: the compute is the same as with trained ones. Appends to bench/RESULTS.md.

Usage: python bench/serve_latency.py [--size 320] [--repeats 15]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
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


def _study(size: int) -> list[str]:
    rng = np.random.default_rng(0)
    views = []
    for _ in range(3):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (512, 400)).astype(np.uint8)).save(buffer, "PNG")
        views.append(base64.b64encode(buffer.getvalue()).decode())
    return views


def _p50(samples: list[float]) -> float:
    return statistics.median(samples)


def main() -> None:
    """Build the variants, measure the three paths, record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import keras
    import mlflow
    import pandas as pd

    import mura
    from mura.config import AugmentParams, ModelSpec
    from mura.data.uploads import decode_upload
    from mura.modeling.models import build_model
    from mura.serving.config import CONFIG_ARTIFACT, ServingConfig
    from mura.serving.service import EnsembleService

    tmp = Path(tempfile.mkdtemp(prefix="mura-bench-"))
    paths = {}
    for k, (name, arch) in enumerate(VARIANTS.items()):
        keras.utils.set_random_seed(k)
        paths[name] = str(tmp / f"{name}.keras")
        build_model(ModelSpec(arch), args.size, "none", AugmentParams(), seed=k).save(paths[name])
    views = _study(args.size)
    raw = [base64.b64decode(v) for v in views]

    # (a) naive: per image, per model predict.
    models = {n: keras.saving.load_model(p) for n, p in paths.items()}
    naive = []
    for _ in range(args.repeats + 1):
        t0 = time.perf_counter()
        for data in raw:
            x = decode_upload(data, args.size, "stretch", 40_000_000).pixels[None, ..., None]
            for model in models.values():
                model.predict(x, verbose=0)
        naive.append(time.perf_counter() - t0)
    naive = naive[1:]
    del models

    # (b) in-process served model.
    config = ServingConfig(
        variants=tuple(paths),
        variant_weights={n: 1.0 for n in paths},
        thresholds={"default": 0.5},
        operating_point="default",
        image_size=args.size,
        resize="stretch",
        max_pixels=40_000_000,
        serve_batch_size=8,
        synthetic_data=True,
    )
    t0 = time.perf_counter()
    service = EnsembleService(paths, config)
    service.predict_frame(pd.DataFrame({"image": views}))
    cold_inproc = time.perf_counter() - t0
    frame = pd.DataFrame({"image": views, "study_id": ["s"] * 3})
    inproc = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        service.predict_frame(frame)
        inproc.append(time.perf_counter() - t0)
    del service

    # (c) HTTP through mlflow models serve.
    config_path = tmp / f"{CONFIG_ARTIFACT}.json"
    config.save(config_path)
    package = Path(mura.__file__).parent
    model_dir = tmp / "pyfunc"
    mlflow.pyfunc.save_model(
        str(model_dir),
        python_model=str(package / "serving" / "pyfunc.py"),
        artifacts={CONFIG_ARTIFACT: str(config_path), **paths},
        code_paths=[str(package)],
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    body = json.dumps({"dataframe_records": [{"image": v, "study_id": "s"} for v in views]}).encode()

    def request() -> bytes:
        url = f"http://127.0.0.1:{port}/invocations"
        call = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        return urllib.request.urlopen(call, timeout=120).read()

    t0 = time.perf_counter()
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", str(model_dir), "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
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
                if time.perf_counter() - t0 > 300:
                    raise
                time.sleep(0.2)
        cold_http = time.perf_counter() - t0
        http = []
        for _ in range(args.repeats):
            t1 = time.perf_counter()
            request()
            http.append(time.perf_counter() - t1)
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    overhead = _p50(http) / _p50(inproc) - 1
    append(
        f"serving latency, 3-view study, 4 variants at {args.size}² (random init)",
        [
            "| path | p50 per study | p90 |",
            "|---|---|---|",
            f"| (a) naive: `model.predict` per image per variant | {_p50(naive):.3f} s | {np.percentile(naive, 90):.3f} s |",
            f"| (b) served model in-process (one batched call) | {_p50(inproc):.3f} s | {np.percentile(inproc, 90):.3f} s |",
            f"| (c) HTTP, `mlflow models serve` | {_p50(http):.3f} s | {np.percentile(http, 90):.3f} s |",
            "",
            f"Targets: in-process p50 <= 1.0 s: {'met' if _p50(inproc) <= 1.0 else 'NOT met'}; HTTP overhead "
            f"{overhead:+.1%} (target <= 15 %): {'met' if overhead <= 0.15 else 'NOT met'}; cold start "
            f"(server start to first answer) {cold_http:.1f} s, in-process load + first answer {cold_inproc:.1f} s "
            f"(target <= 30 s): {'met' if cold_http <= 30 else 'NOT met'}.",
        ],
    )


if __name__ == "__main__":
    main()

"""Training throughput of the project's own training step, against Keras's default set-up, in one run.

Each set-up runs in its own process (the allocator and TensorFlow's generator "memory patch"
are process-wide, so they cannot be compared in one process):

- ``keras-default`` (the baseline): the ``PyDataset`` given to ``model.fit`` as it is (Keras wraps
  it in ``tf.data.Dataset.from_generator``, whose kernel fixes glibc's trim threshold), Keras's
  Adam, glibc's malloc.
- ``jemalloc``: the same with Debian's jemalloc preloaded (``LD_PRELOAD``; skipped when absent).
- ``project``: what ``stages/train.py`` does: :func:`mura.modeling.feed.fit_input` (``tf.data`` over
  the cache) and :class:`mura.modeling.optimizer.Adam` (the same update, traced in fewer
  operations), glibc's malloc.
- ``project+jemalloc``: both.

Per set-up: first epoch (compile + steps), steady images/s, and during the steady epochs the
share of CPU time spent in the kernel and the page faults per second. Runs on any Keras
backend (on a GPU machine without TensorFlow: ``KERAS_BACKEND=jax python bench/train_throughput.py
--size 320 --batch 64 --precision mixed_bfloat16 --steps 100 --epochs 2``). On a backend other than
TensorFlow the project's feed *is* Keras's default (``fit_input`` hands over the ``PyDataset``), so
only ``keras-default`` is run there: two runs of one code path would only measure noise. A GPU
takes seconds per epoch: measure at least a few hundred steps. Appends to bench/RESULTS.md.

Usage: python bench/train_throughput.py [--archs densenet169,resnet101] [--size 64] [--batch 16]
       [--precision float32] [--steps 24] [--epochs 1] [--setups keras-default,jemalloc,project,project+jemalloc]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import append, machine  # noqa: E402

SETUPS = {  # name -> (jemalloc, the project's training step: tf.data feed and Adam)
    "keras-default": (False, False),
    "jemalloc": (True, False),
    "project": (False, True),
    "project+jemalloc": (True, True),
}
JEMALLOC = next(iter(sorted(Path("/usr/lib").glob("*-linux-gnu/libjemalloc.so.2"))), None)


def device_name() -> str:
    """The accelerator (or CPU) the Keras backend runs on."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            devices = jax.devices()
            return (
                f"{devices[0].device_kind} ({backend}, {len(devices)} device(s))"
                if devices[0].platform != "cpu"
                else f"{machine()} ({backend})"
            )
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"{gpus[0].name} (tensorflow)" if gpus else f"{machine()} (tensorflow)"
    except Exception:
        pass
    return f"{machine()} ({backend})"


def _cpu() -> tuple[float, float, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime, usage.ru_minflt


def measure(arch: str, size: int, batch: int, precision: str, steps: int, epochs: int, project_step: bool) -> dict[str, float]:
    """First epoch and steady-state figures of one architecture in this process."""
    import keras

    from mura.config import AugmentParams, ModelSpec
    from mura.modeling.feed import CacheBatches, fit_input
    from mura.modeling.models import build_model
    from mura.modeling.train import compile_model

    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    n = batch * steps
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    batches = CacheBatches(pixels, np.arange(n), labels, batch, shuffle=True, seed=0, sample_weights=np.ones(n), workers=2)
    data = fit_input(batches) if project_step else batches
    model = build_model(ModelSpec(arch), size, "none", AugmentParams(), seed=0)
    compile_model(model, 1e-4, optimizer=None if project_step else keras.optimizers.Adam(1e-4))
    t0 = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    first = time.perf_counter() - t0
    user0, sys0, faults0 = _cpu()
    t0 = time.perf_counter()
    model.fit(data, epochs=1 + epochs, initial_epoch=1, verbose=0)
    wall = time.perf_counter() - t0
    user1, sys1, faults1 = _cpu()
    cpu = (user1 - user0) + (sys1 - sys0)
    return {
        "first_epoch_s": first,
        "images_per_s": epochs * n / wall,
        "kernel_share": (sys1 - sys0) / cpu if cpu else 0.0,
        "cores_busy": cpu / wall,
        "faults_per_s": (faults1 - faults0) / wall,
    }


def child(args: argparse.Namespace) -> None:
    """One set-up, one architecture: print its figures as one JSON line."""
    project_step = SETUPS[args.child][1]
    figures = measure(args.archs, args.size, args.batch, args.precision, args.steps, args.epochs, project_step)
    allocator = "jemalloc" if "jemalloc" in os.environ.get("LD_PRELOAD", "") else "glibc"
    print("RESULT " + json.dumps({**figures, "allocator": allocator, "device": device_name()}), flush=True)


def run_setup(setup: str, arch: str, args: argparse.Namespace) -> dict[str, float]:
    """Run one set-up in a fresh process (glibc's malloc unless the set-up preloads jemalloc)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if SETUPS[setup][0]:
        env["LD_PRELOAD"] = str(JEMALLOC)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = [sys.executable, __file__, "--child", setup, "--archs", arch]
    command += ["--size", str(args.size), "--batch", str(args.batch), "--precision", args.precision]
    command += ["--steps", str(args.steps), "--epochs", str(args.epochs)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{setup}/{arch} failed:\n{out.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(lines[-1][len("RESULT ") :])
    print(f"{arch} {setup}: {json.dumps(figures)}", flush=True)
    return figures


def main() -> None:
    """Measure each architecture under each set-up and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="densenet169,resnet101")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=24, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=1, help="steady epochs measured after the first")
    parser.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    parser.add_argument("--child", choices=list(SETUPS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    setups = args.setups.split(",")
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow" and "keras-default" in setups and "project" in setups:
        print(f"on {backend} the project's feed is Keras's default set-up: 'project' is not run twice", flush=True)
        setups.remove("project")
    if JEMALLOC is None and any(SETUPS[s][0] for s in setups if s in SETUPS):
        print("jemalloc is not installed (Debian: libjemalloc2): its set-ups are skipped", flush=True)
        setups = [s for s in setups if s not in SETUPS or not SETUPS[s][0]]
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown:
        parser.error(f"unknown set-up(s) {unknown}; choose from {list(SETUPS)}")
    rows = [
        "| architecture | image size | batch | set-up | allocator | first epoch | images/s | vs keras-default "
        "| kernel share of CPU | cores busy | page faults/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    device = None
    for arch in args.archs.split(","):
        base = None
        for setup in setups:
            f = run_setup(setup, arch, args)
            device = device or str(f["device"])
            base = f["images_per_s"] if setup == "keras-default" else base
            ratio = f"{f['images_per_s'] / base:.2f}×" if base else "—"
            rows.append(
                f"| {arch} | {args.size}² | {args.batch} | {setup} | {f['allocator']} | {f['first_epoch_s']:.1f} s "
                f"| {f['images_per_s']:.1f} | {ratio} | {f['kernel_share']:.0%} | {f['cores_busy']:.2f} "
                f"| {f['faults_per_s']:,.0f} |"
            )
    rows += [
        "",
        f"{args.steps} steps per epoch, {args.precision}; figures after the first epoch over {args.epochs} epoch(s). "
        "Each set-up in its own process. Training step: uint8 cache → RandomAffine → backbone + head, "
        "class-weighted BCE, Adam (Keras's in keras-default and jemalloc, the project's in project); "
        "random init (same compute as ImageNet weights).",
    ]
    append("training throughput: Keras's default set-up vs the project's", rows, device=device)


if __name__ == "__main__":
    main()

"""Training throughput of the project's own training step: feeding from the uint8 cache
(``CacheBatches``), one-pass affine augmentation and the model, per architecture.

Compile time (first epoch) and steady-state images/s are measured separately and printed
as they come. Runs on any Keras backend: on a GPU machine without TensorFlow use
``KERAS_BACKEND=jax python bench/train_throughput.py --size 320 --batch 64 --precision mixed_bfloat16``.
Appends to bench/RESULTS.md with the device name.

Usage: python bench/train_throughput.py [--archs densenet169,resnet101] [--size 64] [--batch 16]
       [--precision float32] [--steps 12]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import append, machine  # noqa: E402


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


def measure(arch: str, size: int, batch: int, precision: str, steps: int, build_optimizer: bool = True) -> tuple[float, float]:
    """(first-epoch seconds including compilation, steady images/s) for one architecture.

    ``build_optimizer=False`` reproduces Keras's lazy optimizer build (the baseline:
    on TensorFlow the first step is then traced twice).
    """
    import keras

    from mura.config import AugmentParams, ModelSpec
    from mura.modeling.feed import CacheBatches
    from mura.modeling.models import build_model
    from mura.modeling.train import compile_model

    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    n = batch * steps
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    batches = CacheBatches(pixels, np.arange(n), labels, batch, shuffle=True, seed=0, sample_weights=np.ones(n), workers=2)
    model = build_model(ModelSpec(arch), size, "none", AugmentParams(), seed=0)
    compile_model(model, 1e-4, build_optimizer=build_optimizer)
    t0 = time.perf_counter()
    model.fit(batches, epochs=1, verbose=0)
    first = time.perf_counter() - t0
    how = "optimizer built up front" if build_optimizer else "lazy optimizer (Keras default)"
    print(f"{arch}: first epoch (compile + {steps} steps, {how}) {first:.1f} s", flush=True)
    t0 = time.perf_counter()
    model.fit(batches, epochs=2, initial_epoch=1, verbose=0)
    rate = n / (time.perf_counter() - t0)
    print(f"{arch}: {rate:.1f} images/s", flush=True)
    return first, rate


def main() -> None:
    """Measure each architecture and record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="densenet169,resnet101")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--no-baseline", action="store_true", help="skip the lazy-optimizer compile baseline")
    args = parser.parse_args()
    rows = [
        "| architecture | image size | batch | precision | first epoch, lazy optimizer (baseline) "
        "| first epoch, optimizer built up front | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch in args.archs.split(","):
        lazy = None if args.no_baseline else measure(arch, args.size, args.batch, args.precision, args.steps, False)[0]
        first, rate = measure(arch, args.size, args.batch, args.precision, args.steps)
        shown = "—" if lazy is None else f"{lazy:.1f} s"
        rows.append(f"| {arch} | {args.size}² | {args.batch} | {args.precision} | {shown} | {first:.1f} s | {rate:.1f} |")
    rows += [
        "",
        "Project training step: uint8 cache → CacheBatches → RandomAffine (one resampling) → backbone + head, "
        "class-weighted BCE, Adam. Random init (same compute as ImageNet weights).",
    ]
    append("training throughput", rows, device=device_name())


if __name__ == "__main__":
    main()

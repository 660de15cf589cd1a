"""The training input side alone, at MURA's size (320²): can it keep a GPU busy, and what share of a CPU step is it?

What ``train`` feeds: images are decoded and resized once, by ``ingest``, into the uint8 cache
(``pixels.npy``, memory-mapped); a batch is a gather of cache rows (:class:`mura.modeling.feed.CacheBatches`);
the seed's augmentation (rotation, shift, zoom, flip) is a Keras layer *inside* the model
(:class:`mura.modeling.layers.RandomAffine`), so on a GPU it runs on the accelerator with the rest of
the step. Measured here, in one run, on a cache of ``--images`` random 320² images written to disk:

- ``feed``: batches gathered from the memmap, in 1 and 2 threads (the ``PyDataset`` path every backend
  can use; threads release the GIL in NumPy's copy), and through :func:`mura.modeling.feed.fit_input`'s
  ``tf.data`` pipeline (what TensorFlow trains from). Images/s, and per thread (≈ per core).
- ``augment on CPU``: the augmentation layer alone in training mode, on the CPU, for comparison: what
  a feed would cost per core if augmentation ran on the input side as in the seed's Keras generator.
- ``share``: one training step of ``--arch`` at ``--size`` on this CPU against the time to gather its
  batch (and to augment it on the CPU), with ``--steps`` steps after a warm-up step.

The per-core figures predict a GPU node: a node with C cores feeds about C × (feed img/s per
thread), to be compared with the model's img/s on the GPU (anchors: ~1,000-1,400 img/s at 320²).
With ``--cold`` the page cache is dropped before the first feed pass (root only), so the first pass
reads from disk as the first epoch of a large dataset would. Appends to bench/RESULTS.md.

Usage: python bench/feed_throughput.py [--size 320] [--images 2048] [--batch 32] [--arch densenet169]
       [--step-batch 8] [--steps 2] [--cold]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402


def write_cache(folder: Path, images: int, size: int) -> np.ndarray:
    """A random uint8 cache on disk, memory-mapped like ``pixels.npy``."""
    path = folder / "pixels.npy"
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(images, size, size))
    rng = np.random.default_rng(0)
    for start in range(0, images, 256):
        stop = min(images, start + 256)
        cache[start:stop] = rng.integers(0, 256, (stop - start, size, size), dtype=np.uint8)
    cache.flush()
    del cache
    loaded: np.ndarray = np.load(path, mmap_mode="r")
    return loaded


def drop_page_cache() -> bool:
    """Drop Linux's page cache (root only); whether it was dropped."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def feed_rate(pixels: np.ndarray, batch: int, threads: int) -> float:
    """Images/s gathering one shuffled epoch of batches with ``threads`` threads (the PyDataset path)."""
    from mura.modeling.feed import CacheBatches

    rows = np.arange(len(pixels))
    batches = CacheBatches(pixels, rows, np.zeros(len(rows)), batch, shuffle=True, seed=1, drop_remainder=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(batches.__getitem__, range(len(batches))):
            pass
    return len(batches) * batch / (time.perf_counter() - started)


def tf_data_rate(pixels: np.ndarray, batch: int) -> float:
    """Images/s through ``fit_input``'s ``tf.data`` pipeline (TensorFlow backend)."""
    from mura.modeling.feed import CacheBatches, fit_input

    rows = np.arange(len(pixels))
    batches = CacheBatches(pixels, rows, np.zeros(len(rows)), batch, shuffle=True, seed=2, drop_remainder=True)
    dataset = fit_input(batches)
    started = time.perf_counter()
    count = sum(int(images.shape[0]) for images, _ in dataset)
    return count / (time.perf_counter() - started)


def augment_rate(size: int, batch: int, repeats: int = 4) -> float:
    """Images/s of the seed's augmentation layer alone, in training mode, on this CPU."""
    import keras

    from mura.modeling.layers import RandomAffine

    layer = RandomAffine(20.0, 0.2, 0.2, True, "nearest", seed=0)
    images = keras.ops.convert_to_tensor(np.random.default_rng(0).integers(0, 256, (batch, size, size, 1)).astype("float32"))
    layer(images, training=True)  # trace / warm up
    started = time.perf_counter()
    for _ in range(repeats):
        keras.ops.convert_to_numpy(layer(images, training=True))
    return repeats * batch / (time.perf_counter() - started)


def step_seconds(arch: str, size: int, batch: int, steps: int) -> float:
    """Seconds per training step of ``arch`` without augmentation (compiled as ``train`` compiles it)."""
    import keras

    from mura.config import ModelSpec
    from mura.modeling.models import build_model
    from mura.modeling.train import compile_model

    model = build_model(ModelSpec(arch), size, "none", None)
    compile_model(model, 1e-3)
    x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 1)).astype(np.uint8)
    y = np.random.default_rng(1).integers(0, 2, batch).astype(np.float32)
    model.train_on_batch(x, y)  # the trace and first step
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    keras.backend.clear_session()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32, help="feed batch size")
    parser.add_argument("--arch", default="densenet169", help="the model of the step-share measurement ('' skips it)")
    parser.add_argument("--step-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before the first feed pass (root)")
    args = parser.parse_args()

    import keras

    with tempfile.TemporaryDirectory(prefix="mura-feed-") as tmp:
        pixels = write_cache(Path(tmp), args.images, args.size)
        cold = drop_page_cache() if args.cold else False
        first = feed_rate(pixels, args.batch, 1)  # cold when dropped: read from disk
        one = feed_rate(pixels, args.batch, 1)
        two = feed_rate(pixels, args.batch, 2)
        tf_rate = tf_data_rate(pixels, args.batch) if keras.backend.backend() == "tensorflow" else float("nan")
        gather_s = args.step_batch / one
    cores = os.cpu_count() or 1
    aug = augment_rate(args.size, args.batch)
    lines = [
        f"Backend {keras.backend.backend()}; cache of {args.images} random {args.size}² uint8 images on disk "
        f"({args.images * args.size**2 / 2**20:.0f} MiB), batches of {args.batch}, shuffled.",
        "",
        "| what | images/s | per thread (≈ per core) |",
        "|---|---|---|",
        f"| feed, first pass ({'page cache dropped: from disk' if cold else 'page cache warm'}) | {first:,.0f} | {first:,.0f} |",
        f"| feed, 1 thread | {one:,.0f} | {one:,.0f} |",
        f"| feed, 2 threads | {two:,.0f} | {two / 2:,.0f} |",
        f"| feed through fit_input's tf.data (1-thread pool) | {tf_rate:,.0f} | {tf_rate:,.0f} |",
        f"| augmentation layer alone on this CPU ({cores} cores, training mode) | {aug:,.0f} | {aug / cores:,.0f} |",
    ]
    if args.arch:
        step = step_seconds(args.arch, args.size, args.step_batch, args.steps)
        aug_s = args.step_batch / aug
        lines += [
            "",
            f"One {args.arch} training step at {args.size}², batch {args.step_batch}, on this CPU: {step:.2f} s "
            f"({args.step_batch / step:.1f} img/s). Gathering its batch: {gather_s * 1000:.1f} ms "
            f"({100 * gather_s / step:.2f} % of the step); augmenting it on the CPU instead of in the model: "
            f"{aug_s * 1000:.0f} ms ({100 * aug_s / step:.1f} % of the step).",
        ]
    lines += [
        "",
        f"Prediction for a 16-core GPU node: the feed gathers ≈ 16 × {one:,.0f} = {16 * one:,.0f} img/s per pass "
        f"(target ≥ 1,400); the augmentation runs in the model on the GPU. Had it stayed on the input side, "
        f"16 cores would augment ≈ {16 * aug / cores:,.0f} img/s.",
    ]
    append(f"Training feed at {args.size}² (bench/feed_throughput.py)", lines)


if __name__ == "__main__":
    main()

"""Ingest throughput: the project's ingest vs a naive single-process PIL loop.

Generates MURA-like images (~512x400 8-bit grayscale PNGs) in the MURA-v1.1
layout, then measures, in one run, images/s end-to-end (decode, check,
convert, resize, hash, write the cache) and peak RSS growth. Target on a
2-core machine: >= 500 images/s. Figures are appended to bench/RESULTS.md.

Usage: python bench/ingest.py [--images 3000] [--size 320]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

from mura.config import DataParams, IngestParams  # noqa: E402
from mura.data.imaging import prepare_image  # noqa: E402
from mura.data.ingest import ingest  # noqa: E402
from mura.data.synthetic import render_phantom  # noqa: E402


def make_dataset(root: Path, n: int) -> list[Path]:
    """Write n MURA-layout PNGs (noise-varied copies of 40 rendered phantoms)."""
    rng = np.random.default_rng(0)
    bases = [np.asarray(Image.fromarray(render_phantom("XR_WRIST", bool(i % 2), rng)).resize((512, 400))) for i in range(40)]
    mura = root / "MURA-v1.1"
    lines, studies, files = [], [], []
    for i in range(n):
        study = f"MURA-v1.1/train/XR_WRIST/patient{i // 3 + 1:05d}/study1_{'positive' if (i // 3) % 2 else 'negative'}"
        if i % 3 == 0:
            studies.append(f"{study}/,{(i // 3) % 2}")
        rel = f"{study}/image{i % 3 + 1}.png"
        noisy = np.clip(bases[i % 40].astype(np.int16) + rng.integers(-4, 5, bases[0].shape), 0, 255).astype(np.uint8)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(root / rel, compress_level=6)
        lines.append(rel)
        files.append(root / rel)
    for split, paths, labeled in (("train", lines, studies), ("valid", lines[:3], studies[:1])):
        (mura / f"{split}_image_paths.csv").write_text("".join(p.replace("/train/", f"/{split}/") + "\n" for p in paths))
        (mura / f"{split}_labeled_studies.csv").write_text("".join(s.replace("/train/", f"/{split}/") + "\n" for s in labeled))
    for rel in lines[:3]:  # the valid copies
        target = root / rel.replace("/train/", "/valid/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((root / rel).read_bytes())
    return files


def naive(files: list[Path], size: int) -> np.ndarray:
    """The baseline: one process, PIL open/convert/resize, hash, stack in memory."""
    out = []
    for file in files:
        data = file.read_bytes()
        hashlib.sha256(data).hexdigest()
        with Image.open(file) as image:
            out.append(np.asarray(image.convert("L").resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def ceiling(files: list[Path], size: int, cores: int) -> float:
    """The decode + resize + hash limit: ``prepare_image`` on one core, files already in memory, times ``cores``."""
    datas = [file.read_bytes() for file in files[:500]]
    start = time.perf_counter()
    for data in datas:
        prepare_image(data, size, "stretch", 40_000_000)
    return cores * len(datas) / (time.perf_counter() - start)


def main() -> None:
    """Generate, measure both paths, record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=320)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = make_dataset(root, args.images)
        (root / "no-fracture-set").mkdir()  # an empty folder leaves that dataset out
        data = DataParams(mura_dir=str(root / "MURA-v1.1"), fracture_dir=str(root / "no-fracture-set"), image_size=args.size)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        result = ingest(data, IngestParams(), root / "pixels.npy", progress=False)
        t_project = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        n = result.summary["ingested"]
        t0 = time.perf_counter()
        naive(files, args.size)
        t_naive = time.perf_counter() - t0
        cores = os.cpu_count() or 1
        limit = ceiling(files, args.size, cores)
    rate, rate_naive = n / t_project, len(files) / t_naive
    append(
        f"ingest throughput ({n} MURA-like 512x400 PNGs -> {args.size}²)",
        [
            "| path | images/s | time for MURA's 40,561 images |",
            "|---|---|---|",
            f"| naive single-process PIL loop | {rate_naive:.0f} | {40561 / rate_naive:.0f} s |",
            f"| `mura.data.ingest` (workers=all cores, memmap cache, dHash, duplicates) | {rate:.0f} | {40561 / rate:.0f} s |",
            f"| limit: `prepare_image` (decode, resize, hashes) on one core × {cores}, no I/O, no start-up | {limit:.0f} | "
            f"{40561 / limit:.0f} s |",
            "",
            f"The project's ingest reaches {rate / limit:.0%} of that limit.",
            f"Speed-up {rate / rate_naive:.2f}x; target >= 500 images/s: {'met' if rate >= 500 else 'NOT met'}. "
            f"Main-process max RSS grew {(rss1 - rss0) / 1024:.0f} MiB during ingest "
            f"(cache is {n * args.size**2 / 2**20:.0f} MiB on disk).",
        ],
    )


if __name__ == "__main__":
    main()

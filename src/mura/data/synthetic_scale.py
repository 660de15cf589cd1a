"""Synthetic phantoms at the real datasets' size: MURA-v1.1's counts and the fracture set's, for rehearsals.

:mod:`mura.data.synthetic` writes a small dataset for demos and tests (patients drawn at random).
A rehearsal at scale (``bench/rehearsal.py``, issue 35) needs what a user who brings the real data
has: MURA-v1.1's studies and images per body part, split and label, and the Bone Fracture
Multi-Region set's split sizes. The pictures are the same phantoms, drawn in parallel: the studies
are cut into chunks, each chunk drawn from its own generator seeded by ``(seed, chunk)``, so the
files are a function of the seed whatever the number of processes.

THIS IS NOT PATIENT DATA: every tree is marked as :mod:`mura.data.synthetic`'s are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from mura.data.sources import BODY_PARTS
from mura.data.synthetic import (
    FINDINGS_FILE,
    FRACTURE_DIR,
    Finding,
    _mark,
    _pick_mode,
    encode,
    render_phantom,
    render_phantom_annotated,
    write_coco,
)
from mura.parallel import process_context, worker_count

__all__ = ["FRACTURE_SPLITS", "MURA_V11", "PartCounts", "scaled", "write_fracture_at_scale", "write_mura_at_scale"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PartCounts:
    """Studies (normal, abnormal) and images of one body part in one split."""

    normal: int
    abnormal: int
    images: int


# MURA-v1.1 as downloaded (the MURA paper's Table 1 for the studies; the images per body part of its
# train/valid_image_paths.csv): 13,457 + 1,199 studies, 36,808 + 3,197 images. The hidden test set
# (207 studies) is not part of the download.
MURA_V11: dict[str, dict[str, PartCounts]] = {
    "train": {
        "XR_ELBOW": PartCounts(1094, 660, 4931),
        "XR_FINGER": PartCounts(1280, 655, 5106),
        "XR_FOREARM": PartCounts(590, 287, 1825),
        "XR_HAND": PartCounts(1497, 521, 5543),
        "XR_HUMERUS": PartCounts(321, 271, 1272),
        "XR_SHOULDER": PartCounts(1364, 1457, 8379),
        "XR_WRIST": PartCounts(2134, 1326, 9752),
    },
    "valid": {
        "XR_ELBOW": PartCounts(92, 66, 465),
        "XR_FINGER": PartCounts(92, 83, 461),
        "XR_FOREARM": PartCounts(69, 64, 301),
        "XR_HAND": PartCounts(101, 66, 460),
        "XR_HUMERUS": PartCounts(68, 67, 288),
        "XR_SHOULDER": PartCounts(99, 95, 563),
        "XR_WRIST": PartCounts(140, 97, 659),
    },
}
# Bone Fracture Multi-Region X-ray (Kaggle): images per split; about half of them fractured.
FRACTURE_SPLITS = {"train": 9246, "val": 828, "test": 506}
_SAME_PATIENT = 0.2  # share of studies that are a patient's second (third…) study of the body part
_CHUNK = 64  # studies (or fracture images) per task


def scaled(counts: dict[str, dict[str, PartCounts]], scale: float) -> dict[str, dict[str, PartCounts]]:
    """The counts times ``scale`` (at least one study of each class and one image per study)."""

    def one(c: PartCounts) -> PartCounts:
        normal, abnormal = max(1, round(c.normal * scale)), max(1, round(c.abnormal * scale))
        return PartCounts(normal, abnormal, max(normal + abnormal, round(c.images * scale)))

    return {split: {part: one(c) for part, c in parts.items()} for split, parts in counts.items()}


@dataclass(frozen=True)
class _Study:
    path: str  # MURA-v1.1/<split>/<part>/<patient>/study<k>_<label>
    part: str
    abnormal: bool
    views: int


def _studies(counts: dict[str, dict[str, PartCounts]], rng: np.random.Generator) -> list[_Study]:
    """Every study, with its patient and its number of views (the image totals exact)."""
    studies: list[_Study] = []
    patient = 0
    for split, parts in counts.items():
        for part, c in parts.items():
            labels = rng.permutation(np.r_[np.zeros(c.normal, bool), np.ones(c.abnormal, bool)])
            views = 1 + rng.multinomial(c.images - len(labels), np.full(len(labels), 1 / len(labels)))
            k = 0
            for abnormal, n in zip(labels, views, strict=True):
                if k == 0 or rng.random() >= _SAME_PATIENT:
                    patient, k = patient + 1, 0
                k += 1
                label = "positive" if abnormal else "negative"
                studies.append(
                    _Study(f"MURA-v1.1/{split}/{part}/patient{patient:05d}/study{k}_{label}", part, bool(abnormal), int(n))
                )
    return studies


def _draw_studies(
    out_dir: Path, seed: int, chunk: int, studies: Sequence[_Study]
) -> list[tuple[str, tuple[int, int], list[Finding]]]:
    """Render and write one chunk of studies; their images' (path, shape, findings)."""
    rng = np.random.default_rng([seed, chunk])
    written = []
    for study in studies:
        folder = out_dir / study.path
        folder.mkdir(parents=True, exist_ok=True)
        for v in range(1, study.views + 1):
            gray, findings = render_phantom_annotated(study.part, study.abnormal, rng)
            rel = f"{study.path}/image{v}.png"
            (out_dir / rel).write_bytes(encode(gray, "png", _pick_mode(rng)))
            written.append((rel, gray.shape, findings))
    return written


def _chunks(items: Sequence[T]) -> Iterator[tuple[int, Sequence[T]]]:
    for k in range(0, len(items), _CHUNK):
        yield k // _CHUNK, items[k : k + _CHUNK]


def write_mura_at_scale(out_dir: Path, seed: int, scale: float = 1.0, workers: int = 0) -> Path:
    """Write MURA-v1.1's layout with its real counts (times ``scale``), in parallel.

    Args:
        out_dir: parent folder; the dataset goes to ``out_dir/MURA-v1.1``.
        seed: everything written is a function of it (not of ``workers``).
        scale: 1.0 = MURA-v1.1's 14,656 studies and 40,005 images; less for tests.
        workers: drawing processes (0 = one per core).

    Returns:
        The ``MURA-v1.1`` folder (CSV files, the findings' COCO file, the synthetic marker).
    """
    out_dir = Path(out_dir)
    root = out_dir / "MURA-v1.1"
    _mark(root, "MURA-v1.1 (at MURA-v1.1's counts)", seed)
    counts = scaled(MURA_V11, scale)
    studies = _studies(counts, np.random.default_rng(seed))
    annotated: list[tuple[str, tuple[int, int], list[Finding]]] = []
    with ProcessPoolExecutor(worker_count(workers), mp_context=process_context()) as pool:
        futures = [pool.submit(_draw_studies, out_dir, seed, k, chunk) for k, chunk in _chunks(studies)]
        for future in futures:
            annotated.extend(future.result())
    for split in counts:
        prefix = f"MURA-v1.1/{split}/"
        paths = [rel for rel, _, _ in annotated if rel.startswith(prefix)]
        (root / f"{split}_image_paths.csv").write_text("".join(f"{p}\n" for p in paths))
        labelled = [f"{s.path}/,{int(s.abnormal)}\n" for s in studies if s.path.startswith(prefix)]
        (root / f"{split}_labeled_studies.csv").write_text("".join(labelled))
    write_coco(root / FINDINGS_FILE, annotated)
    logger.info("wrote %d studies, %d images of synthetic MURA at scale %g to %s", len(studies), len(annotated), scale, root)
    return root


def _draw_fracture(inner: Path, seed: int, chunk: int, names: Sequence[tuple[str, str, str]]) -> None:
    rng = np.random.default_rng([seed, 1, chunk])
    for split, label, stem in names:
        ext = str(rng.choice(["jpg", "png"]))
        gray = render_phantom(str(rng.choice(BODY_PARTS)), label == "fractured", rng)
        (inner / split / label / f"{stem}.{ext}").write_bytes(encode(gray, ext, "L" if ext == "jpg" else _pick_mode(rng)))


def write_fracture_at_scale(out_dir: Path, seed: int, scale: float = 1.0, workers: int = 0) -> Path:
    """Write the Bone Fracture Multi-Region layout at its real split sizes (times ``scale``), in parallel.

    Args:
        out_dir: parent folder, as :func:`mura.data.synthetic.write_fracture`'s.
        seed: everything written is a function of it.
        scale: 1.0 = 9,246 / 828 / 506 images in train / val / test.
        workers: drawing processes (0 = one per core).

    Returns:
        The outer ``Bone_Fracture_Binary_Classification`` folder.
    """
    outer = Path(out_dir) / FRACTURE_DIR
    _mark(outer, "Bone Fracture Multi-Region X-ray (at its real size)", seed)
    inner = outer / "Bone_Fracture_Binary_Classification"
    rng = np.random.default_rng([seed, 1])
    names: list[tuple[str, str, str]] = []
    for split, count in FRACTURE_SPLITS.items():
        n = max(2, round(count * scale))
        for label in ("fractured", "not fractured"):
            (inner / split / label).mkdir(parents=True, exist_ok=True)
        fractured = rng.random(n) < 0.5
        names += [(split, "fractured" if f else "not fractured", f"img{len(names) + i:05d}") for i, f in enumerate(fractured)]
    with ProcessPoolExecutor(worker_count(workers), mp_context=process_context()) as pool:
        for future in [pool.submit(_draw_fracture, inner, seed, k, chunk) for k, chunk in _chunks(names)]:
            future.result()
    logger.info("wrote %d synthetic fracture images at scale %g to %s", len(names), scale, outer)
    return outer

"""The ``ingest`` step: list, decode, check, convert, resize, hash and cache.

Images are decoded in worker processes and streamed, in listing order, into a
memory-mapped ``.npy`` file, so memory stays flat however many images there
are. Bad files are quarantined with a reason, never dropped silently and
never a crash.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from mura.config import DataParams, IngestParams
from mura.data.duplicates import choose_dropped, find_duplicate_groups
from mura.data.external import list_external
from mura.data.imaging import REASON_MISSING, THUMBNAIL_SIZE, ImageDecodeError, PreparedImage, prepare_image
from mura.data.sources import (
    SYNTHETIC_MARKER,
    ImageEntry,
    is_junk,
    is_synthetic,
    list_feedback,
    list_fracture,
    list_mura,
)
from mura.errors import ConfigError, DataError
from mura.parallel import process_context, worker_count
from mura.stage import Layout, write_csv, write_json

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = [
    "image_id",
    "dataset",
    "source_split",
    "body_part",
    "patient_id",
    "study_id",
    "label",
    "path",
    "width",
    "height",
    "mode",
    "sha256",
    "pixel_hash",
    "dhash",
    "synthetic",
]
QUARANTINE_COLUMNS = ["image_id", "dataset", "source_split", "path", "reason", "detail"]
DUPLICATE_COLUMNS = ["group_id", "kind", "image_id", "dataset", "source_split", "path", "cross_split", "action"]


@dataclass(frozen=True)
class IngestResult:
    """What ingest produced besides the pixel cache."""

    images: pd.DataFrame
    quarantine: pd.DataFrame
    duplicates: pd.DataFrame
    summary: dict[str, Any]


@dataclass(frozen=True)
class _Job:
    row: int  # cache row this image is written to
    file: str
    image_size: int
    resize: str
    max_pixels: int
    cache: str  # the .npy file being filled
    offset: int  # byte offset of row 0 in the cache


def _load(job: _Job) -> PreparedImage | tuple[str, str]:
    """Worker: prepare one file and write its pixels straight into the cache.

    Returns the prepared image with its pixels dropped (so only metadata goes
    back to the parent process), or ``(reason, detail)`` for a bad file.
    """
    try:
        data = Path(job.file).read_bytes()
    except FileNotFoundError:
        return (REASON_MISSING, "listed but not on disk")
    except OSError as exc:
        return (REASON_MISSING, f"cannot read: {exc.strerror}")
    try:
        prepared = prepare_image(data, job.image_size, job.resize, job.max_pixels)  # type: ignore[arg-type]
    except ImageDecodeError as exc:
        return (exc.reason, exc.detail.splitlines()[0][:200])
    fd = os.open(job.cache, os.O_WRONLY)
    try:
        os.pwrite(fd, prepared.pixels.tobytes(), job.offset + job.row * job.image_size**2)
    finally:
        os.close(fd)
    return dataclasses.replace(prepared, pixels=np.empty((0, 0), np.uint8))


def _map_ordered(jobs: list[_Job], workers: int) -> Iterator[PreparedImage | tuple[str, str]]:
    """Run :func:`_load` over ``jobs`` in order, in ``workers`` processes (1 = in-process)."""
    if workers <= 1 or len(jobs) < 64:
        yield from map(_load, jobs)
        return
    with process_context().Pool(workers) as pool:
        yield from pool.imap(_load, jobs, chunksize=32)


def list_sources(data: DataParams) -> tuple[list[ImageEntry], dict[str, dict[str, Any]]]:
    """List both datasets and the feedback exports; an empty configured folder means that dataset is not used.

    The folders are DVC dependencies of ``ingest`` (``dvc.yaml`` templates them from
    params), so both datasets' must exist; a user without one of the datasets points its param
    at an empty folder. The external test sets (``data.external_dir``: FracAtlas, GRAZPEDWRI-DX,
    :mod:`mura.data.external`) are listed when present. The feedback folder (``data.feedback_dir``, ``mura feedback export``'s)
    may be empty or absent: no export yet.

    Args:
        data: the ``data`` params.

    Returns:
        ``(entries, presence)``: all entries (MURA first) and per dataset
        ``{"present", "dir", "synthetic"}``.

    Raises:
        ConfigError: a configured folder does not exist (the message names the param).
        DataError: both datasets are empty, or a present one is malformed.
    """
    entries: list[ImageEntry] = []
    presence: dict[str, dict[str, Any]] = {}
    for name, param, folder, lister in (
        ("mura", "data.mura_dir", data.mura_dir, list_mura),
        ("fracture", "data.fracture_dir", data.fracture_dir, list_fracture),
    ):
        path = Path(folder)
        if not path.is_dir():
            raise ConfigError(
                f"{param}={folder!r}: no such folder (point it at the dataset, or at an empty folder to "
                "leave that dataset out; `mura synth data/raw/synthetic` writes the synthetic default)"
            )
        present = any(not is_junk(child.name) for child in path.iterdir())
        presence[name] = {"present": present, "dir": folder, "synthetic": present and is_synthetic(path)}
        if present:
            entries.extend(lister(path))
        else:
            logger.warning("dataset %s left out: %s=%s is empty", name, param, folder)
    for name, listed in list_external(Path(data.external_dir)).items():
        presence[name] = {"present": bool(listed), "dir": data.external_dir, "synthetic": is_synthetic(Path(data.external_dir))}
        logger.info("external test set %s: %d images from %s", name, len(listed), data.external_dir)
        entries.extend(listed)
    feedback_dir = Path(data.feedback_dir)
    feedback = list_feedback(feedback_dir) if feedback_dir.is_dir() else []
    synthetic = bool(feedback) and any((export / SYNTHETIC_MARKER).exists() for export in feedback_dir.iterdir())
    presence["feedback"] = {"present": bool(feedback), "dir": data.feedback_dir, "synthetic": synthetic}
    if feedback:
        logger.info("feedback: %d radiologist-labelled images from %s", len(feedback), data.feedback_dir)
        entries.extend(feedback)
    if not entries:
        raise DataError(
            f"no image listed: data.mura_dir={data.mura_dir!r} and data.fracture_dir={data.fracture_dir!r} "
            "hold no dataset (see docs/data.md)"
        )
    return entries, presence


def _finalize_cache(tmp: Path, final: Path, keep_rows: list[int], shape: tuple[int, int]) -> None:
    """Compact the kept rows to the front of ``tmp``, fix its header, move it to ``final``."""
    if keep_rows != list(range(len(keep_rows))):
        cache = np.load(tmp, mmap_mode="r+")
        for new_i, old_i in enumerate(keep_rows):
            if new_i != old_i:
                cache[new_i] = cache[old_i]
        cache.flush()
        del cache
    count = len(keep_rows)
    # The header length depends on the digits of the shape; rewrite in place
    # when it fits, else copy into a fresh file (rare: only when the row count
    # loses a digit across a 64-byte alignment boundary).
    with tmp.open("r+b") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        offset = handle.tell()
        new_header = io.BytesIO()
        np.lib.format.write_array_header_1_0(new_header, {"descr": "|u1", "fortran_order": False, "shape": (count, *shape)})
        raw_header = new_header.getvalue()  # magic, length and header dict
        if len(raw_header) == offset:
            handle.seek(0)
            handle.write(raw_header)
            handle.truncate(offset + count * shape[0] * shape[1])
            in_place = True
        else:
            in_place = False
    if in_place:
        os.replace(tmp, final)
        return
    source = np.load(tmp, mmap_mode="r")
    target = np.lib.format.open_memmap(final, mode="w+", dtype=np.uint8, shape=(count, *shape))
    for start in range(0, count, 1024):
        target[start : start + 1024] = source[start : start + 1024]
    target.flush()
    del source, target
    tmp.unlink()


def ingest(data: DataParams, params: IngestParams, pixels_path: Path, progress: bool = True) -> IngestResult:
    """Ingest both datasets into the pixel cache at ``pixels_path``.

    Long on purpose: list, check, decode in workers into the memmap and write the table is one
    sequence whose steps share the listing; the per-image work is in its own functions.

    Args:
        data: ``data`` params (dataset folders, image size, resize policy).
        params: ``ingest`` params (workers, duplicate policy, limits).
        pixels_path: where to write the ``(N, S, S)`` uint8 cache.
        progress: show a progress bar.

    Returns:
        Listing of ingested images (row i = cache row i), quarantine,
        duplicate groups and a summary with counts per dataset.

    Raises:
        DataError: no dataset, or a malformed listing.
    """
    entries, presence = list_sources(data)
    size = data.image_size
    pixels_path = Path(pixels_path)
    pixels_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pixels_path.with_name(pixels_path.name + ".partial")
    # Workers write rows in place (pwrite), so neither this process nor they
    # hold the decoded images: memory stays flat in the number of images.
    with tmp.open("wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "|u1", "fortran_order": False, "shape": (len(entries), size, size)}
        )
        offset = handle.tell()
        handle.truncate(offset + len(entries) * size * size)
    workers = worker_count(params.workers)
    jobs = [_Job(i, str(e.file), size, data.resize, params.max_pixels, str(tmp), offset) for i, e in enumerate(entries)]
    written: list[int] = []
    rows: list[dict[str, Any]] = []
    thumbs = np.zeros((len(entries), THUMBNAIL_SIZE, THUMBNAIL_SIZE), np.uint8)  # 1 KiB per image
    quarantine: list[dict[str, Any]] = []
    results = _map_ordered(jobs, workers)
    bar = tqdm(results, total=len(jobs), desc="ingest", unit="img", disable=not progress or None, mininterval=1.0)
    for entry, result in zip(entries, bar, strict=False):
        if isinstance(result, tuple):
            reason, detail = result
            quarantine.append(
                {
                    "image_id": entry.image_id,
                    "dataset": entry.dataset,
                    "source_split": entry.source_split,
                    "path": entry.path,
                    "reason": reason,
                    "detail": detail,
                }
            )
            continue
        thumbs[len(rows)] = result.thumbnail
        written.append(len(written) + len(quarantine))
        rows.append(
            {
                "image_id": entry.image_id,
                "dataset": entry.dataset,
                "source_split": entry.source_split,
                "body_part": entry.body_part,
                "patient_id": entry.patient_id,
                "study_id": entry.study_id,
                "label": entry.label,
                "path": entry.path,
                "width": result.width,
                "height": result.height,
                "mode": result.mode,
                "sha256": result.sha256,
                "pixel_hash": result.pixel_hash,
                "dhash": f"{result.dhash:016x}",
                "synthetic": bool(presence[entry.dataset]["synthetic"]),
            }
        )
    images = pd.DataFrame(rows, columns=IMAGE_COLUMNS)
    groups = find_duplicate_groups(
        images.assign(dhash=[int(h, 16) for h in images["dhash"]]),
        params.near_duplicate_distance,
        thumbnails=thumbs[: len(rows)],
        min_correlation=params.near_duplicate_min_correlation,
    )
    dropped = choose_dropped(groups, images, params.duplicate_policy)
    keep_mask = ~images["image_id"].isin(dropped)
    _finalize_cache(tmp, pixels_path, [written[int(i)] for i in np.flatnonzero(keep_mask.to_numpy())], (size, size))
    duplicates = _describe_duplicates(groups, images, dropped)
    kept = images[keep_mask].reset_index(drop=True)
    quarantine_df = pd.DataFrame(quarantine, columns=QUARANTINE_COLUMNS)
    summary = summarize(entries, kept, quarantine_df, dropped, images, presence, data)
    return IngestResult(images=kept, quarantine=quarantine_df, duplicates=duplicates, summary=summary)


def _describe_duplicates(groups: pd.DataFrame, images: pd.DataFrame, dropped: set[str]) -> pd.DataFrame:
    """Join duplicate groups with image metadata and the action taken."""
    if groups.empty:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    merged = groups.merge(images[["image_id", "dataset", "source_split", "path"]], on="image_id", how="left")
    n_splits = merged.groupby("group_id")["source_split"].transform("nunique")
    merged["cross_split"] = n_splits > 1
    merged["action"] = np.where(merged["image_id"].isin(dropped), "dropped", "kept")
    return merged[DUPLICATE_COLUMNS]


def summarize(
    entries: list[ImageEntry],
    kept: pd.DataFrame,
    quarantine: pd.DataFrame,
    dropped: set[str],
    decoded: pd.DataFrame,
    presence: dict[str, dict[str, Any]],
    data: DataParams,
) -> dict[str, Any]:
    """Counts per dataset and reason; ``listed = ingested + quarantined + duplicates_dropped``."""
    listed = Counter(e.dataset for e in entries)
    datasets: dict[str, Any] = {}
    for name, info in presence.items():
        q = quarantine[quarantine["dataset"] == name]
        n_dropped = int(decoded[decoded["image_id"].isin(dropped)]["dataset"].eq(name).sum())
        datasets[name] = {
            **info,
            "listed": int(listed.get(name, 0)),
            "ingested": int((kept["dataset"] == name).sum()),
            "quarantined": int(len(q)),
            "duplicates_dropped": n_dropped,
            "quarantine_reasons": {str(k): int(v) for k, v in sorted(Counter(q["reason"]).items())},
        }
    total_listed = sum(d["listed"] for d in datasets.values())
    total_quarantined = sum(d["quarantined"] for d in datasets.values())
    return {
        "synthetic": any(d["synthetic"] for d in datasets.values() if d["present"]),
        "image_size": data.image_size,
        "resize": data.resize,
        "datasets": datasets,
        "listed": total_listed,
        "ingested": int(len(kept)),
        "quarantined": total_quarantined,
        "duplicates_dropped": len(dropped),
        "quarantine_fraction": (total_quarantined / total_listed) if total_listed else 0.0,
    }


def check_quarantine(summary: dict[str, Any], max_fraction: float) -> None:
    """Fail when too large a share of the listed images was quarantined.

    Args:
        summary: the ingest summary.
        max_fraction: ``ingest.max_quarantine_fraction``.

    Raises:
        DataError: the share exceeds the limit, or nothing was ingested.
    """
    if summary["ingested"] == 0:
        raise DataError("ingest produced no usable image; see reports/ingest/quarantine.csv")
    share = summary["quarantine_fraction"]
    if share > max_fraction:
        raise DataError(
            f"{summary['quarantined']} of {summary['listed']} images quarantined ({share:.1%}) exceeds "
            f"ingest.max_quarantine_fraction={max_fraction:.1%}; see reports/ingest/quarantine.csv"
        )


@dataclass(frozen=True)
class IngestPaths:
    """What the ``ingest`` stage writes (its defaults are the standard layout; ``dvc.yaml`` passes them).

    Attributes:
        images: the listing (row i = cache row i).
        pixels: the pixel cache.
        reports: folder for ``quarantine.csv``, ``duplicates.csv`` and ``summary.json``.
    """

    images: Path = Layout.IMAGES
    pixels: Path = Layout.PIXELS
    reports: Path = Path("reports/ingest")


def run_ingest(data: DataParams, params: IngestParams, paths: IngestPaths) -> dict[str, Any]:
    """The ``ingest`` stage: ingest, write the listing and the reports, then check the quarantine share.

    Args:
        data: ``data`` params.
        params: ``ingest`` params.
        paths: where it writes.

    Returns:
        The summary.

    Raises:
        ConfigError: a configured dataset folder is missing.
        DataError: bad datasets, or too many images quarantined (after the reports are written).
    """

    result = ingest(data, params, paths.pixels)
    write_csv(paths.images, result.images)
    write_csv(paths.reports / "quarantine.csv", result.quarantine)
    write_csv(paths.reports / "duplicates.csv", result.duplicates)
    write_json(paths.reports / "summary.json", result.summary)
    check_quarantine(result.summary, params.max_quarantine_fraction)
    return result.summary

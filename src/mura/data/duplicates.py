"""Exact and near-duplicate detection over ingested images (pure functions).

Exact duplicates share decoded pixels (hence also identical files). Near
duplicates have 64-bit dHashes within ``max_distance`` bits; candidate pairs
are found with the pigeonhole trick (split the hash into ``max_distance + 1``
bands: two hashes within the distance agree exactly on at least one band),
so the search stays near-linear instead of comparing all pairs, and each
band's bucket is compared at once (NumPy); the groups are the connected
components of the pairs (SciPy). Radiographs
of one body part look alike at 64 bits, so each candidate pair is confirmed
on small thumbnails: their Pearson correlation must reach ``min_correlation``
(robust to the brightness and contrast edits found in augmented copies).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

SPLIT_ORDER = {"train": 0, "valid": 1, "val": 1, "test": 2}


def _band_buckets(hashes: np.ndarray, n_bands: int, bits: int = 64) -> list[np.ndarray]:
    """For each band of the hashes, the groups (of two or more image rows) that agree on it exactly."""
    width = -(-bits // n_bands)
    mask = np.uint64((1 << width) - 1)
    buckets = []
    for band in range(n_bands):
        values = (hashes >> np.uint64(band * width)) & mask
        order = np.argsort(values, kind="stable")
        starts = np.flatnonzero(np.diff(values[order])) + 1
        buckets += [group for group in np.split(order, starts) if len(group) > 1]
    return buckets


def _unit_rows(thumbnails: np.ndarray) -> np.ndarray:
    """Each thumbnail centred and scaled to unit length (float64), so a dot product is their Pearson correlation.

    A constant thumbnail (no variance) becomes zeros: see :func:`_near_pairs`.
    """
    rows = thumbnails.reshape(len(thumbnails), -1).astype(np.float64)
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
    unit: np.ndarray = np.divide(rows, norms[:, None], out=np.zeros_like(rows), where=norms[:, None] > 0)
    return unit


def _near_pairs(
    members: np.ndarray,
    hashes: np.ndarray,
    max_distance: int,
    unit: np.ndarray | None,
    min_correlation: float,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (a < b) of one band bucket within ``max_distance`` bits and, with thumbnails, correlated enough.

    Vectorized over the bucket, ``block`` rows at a time (a bucket of near-identical images can
    hold thousands). Two constant thumbnails (blank images, whatever their level) correlate 1; a
    constant one and another, 0.
    """
    firsts, seconds = [], []
    for start in range(0, len(members), block):
        rows = members[start : start + block]
        close = np.bitwise_count(hashes[rows][:, None] ^ hashes[members][None, :]) <= max_distance
        close &= np.arange(start, start + len(rows))[:, None] < np.arange(len(members))[None, :]  # each pair once
        if unit is not None and close.any():
            correlation = unit[rows] @ unit[members].T
            correlation[~unit[rows].any(axis=1)[:, None] & ~unit[members].any(axis=1)[None, :]] = 1.0
            close &= correlation >= min_correlation
        i, j = np.nonzero(close)
        firsts.append(rows[i])
        seconds.append(members[j])
    return np.concatenate(firsts), np.concatenate(seconds)


def find_duplicate_groups(
    images: pd.DataFrame,
    max_distance: int = 4,
    thumbnails: np.ndarray | None = None,
    min_correlation: float = 0.97,
) -> pd.DataFrame:
    """Group exact and near-duplicate images.

    Args:
        images: rows with ``image_id``, ``pixel_hash`` and ``dhash`` (int) columns.
        max_distance: largest Hamming distance between dHashes that counts as a
            near duplicate; a negative value disables near-duplicate search.
        thumbnails: optional (N, h, w) array, row i for image i; when given, a
            near pair must also have thumbnail correlation >= ``min_correlation``.
        min_correlation: see ``thumbnails``.

    Returns:
        One row per image that belongs to a group of two or more:
        ``group_id`` (int), ``kind`` (``exact`` when the whole group shares
        pixels, else ``near``) and ``image_id``; sorted by group and image.

    Raises:
        ValueError: a required column is missing.
    """
    missing = {"image_id", "pixel_hash", "dhash"} - set(images.columns)
    if missing:
        raise ValueError(f"images is missing columns {sorted(missing)}")
    n = len(images)
    if n == 0:
        return pd.DataFrame(columns=["group_id", "kind", "image_id"])
    pixel = images["pixel_hash"].tolist()
    # Edges of the graph whose components are the groups: each image to the first with its pixels, and near pairs.
    _, same_pixels = np.unique(np.array(pixel, dtype=object), return_inverse=True)
    first_with = np.full(same_pixels.max() + 1, n)
    np.minimum.at(first_with, same_pixels, np.arange(n))
    firsts, seconds = [np.arange(n)], [first_with[same_pixels]]
    if max_distance >= 0:
        hashes = np.array([int(h) for h in images["dhash"].tolist()], dtype=np.uint64)
        unit = _unit_rows(thumbnails) if thumbnails is not None else None
        for members in _band_buckets(hashes, max_distance + 1):
            a, b = _near_pairs(members, hashes, max_distance, unit, min_correlation)
            firsts.append(a)
            seconds.append(b)
    edges = (np.concatenate(firsts), np.concatenate(seconds))
    graph = coo_matrix((np.ones(len(edges[0]), np.int32), edges), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    by_root: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(component.tolist()):
        by_root[label].append(i)
    rows: list[dict[str, Any]] = []
    ids = images["image_id"].tolist()
    groups = sorted((sorted(ids[i] for i in group), group) for group in by_root.values() if len(group) > 1)
    for group_id, (_, group) in enumerate(groups):
        kind = "exact" if len({pixel[i] for i in group}) == 1 else "near"
        rows.extend({"group_id": group_id, "kind": kind, "image_id": ids[i]} for i in group)
    out = pd.DataFrame(rows, columns=["group_id", "kind", "image_id"])
    return out.sort_values(["group_id", "image_id"], kind="stable").reset_index(drop=True)


def choose_dropped(groups: pd.DataFrame, images: pd.DataFrame, policy: str) -> set[str]:
    """Decide which duplicates to drop.

    ``keep`` drops nothing. ``drop_later_split`` keeps, in each group, the
    copies in the earliest split (train < valid/val < test) and drops the
    copies in later splits, so a picture never sits on both sides of a split.

    Args:
        groups: output of :func:`find_duplicate_groups`.
        images: rows with ``image_id`` and ``source_split``.
        policy: ``keep`` or ``drop_later_split``.

    Returns:
        The image ids to drop.

    Raises:
        ValueError: unknown policy.
    """
    if policy == "keep":
        return set()
    if policy != "drop_later_split":
        raise ValueError(f"unknown duplicate policy {policy!r} (expected 'keep' or 'drop_later_split')")
    split_of = dict(zip(images["image_id"], images["source_split"], strict=True))
    dropped: set[str] = set()
    for _, members in groups.groupby("group_id"):
        ranks = {image_id: SPLIT_ORDER.get(split_of[image_id], 3) for image_id in members["image_id"]}
        earliest = min(ranks.values())
        dropped.update(i for i, rank in ranks.items() if rank > earliest)
    return dropped

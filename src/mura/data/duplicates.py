"""Exact and near-duplicate detection over ingested images (pure functions).

Exact duplicates share decoded pixels (hence also identical files). Near
duplicates have 64-bit dHashes within ``max_distance`` bits; candidate pairs
are found with the pigeonhole trick (split the hash into ``max_distance + 1``
bands: two hashes within the distance agree exactly on at least one band),
so the search stays near-linear instead of comparing all pairs. Radiographs
of one body part look alike at 64 bits, so each candidate pair is confirmed
on small thumbnails: their Pearson correlation must reach ``min_correlation``
(robust to the brightness and contrast edits found in augmented copies).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd

SPLIT_ORDER = {"train": 0, "valid": 1, "val": 1, "test": 2}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _bands(value: int, n_bands: int, bits: int = 64) -> list[tuple[int, int]]:
    width = -(-bits // n_bands)
    return [(i, (value >> (i * width)) & ((1 << width) - 1)) for i in range(n_bands)]


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / denom if denom > 0 else float(np.array_equal(a, b))


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
    uf = _UnionFind(n)
    pixel = images["pixel_hash"].tolist()
    first: dict[str, int] = {}
    for i, key in enumerate(pixel):
        if key in first:
            uf.union(first[key], i)
        else:
            first[key] = i
    if max_distance >= 0:
        hashes = [int(h) for h in images["dhash"].tolist()]
        buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, h in enumerate(hashes):
            for band in _bands(h, max_distance + 1):
                buckets[band].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            for a_pos, a in enumerate(members):
                for b in members[a_pos + 1 :]:
                    if uf.find(a) == uf.find(b) or (hashes[a] ^ hashes[b]).bit_count() > max_distance:
                        continue
                    if thumbnails is None or _correlation(thumbnails[a], thumbnails[b]) >= min_correlation:
                        uf.union(a, b)
    roots = [uf.find(i) for i in range(n)]
    by_root: dict[int, list[int]] = defaultdict(list)
    for i, root in enumerate(roots):
        by_root[root].append(i)
    rows: list[dict[str, Any]] = []
    ids = images["image_id"].tolist()
    groups = sorted((sorted(ids[i] for i in members), members) for members in by_root.values() if len(members) > 1)
    for group_id, (_, members) in enumerate(groups):
        kind = "exact" if len({pixel[i] for i in members}) == 1 else "near"
        rows.extend({"group_id": group_id, "kind": kind, "image_id": ids[i]} for i in members)
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

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mura.data.duplicates import choose_dropped, find_duplicate_groups


def _frame(rows: list[tuple[str, str, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["image_id", "pixel_hash", "dhash", "source_split"])


def test_exact_and_near_groups() -> None:
    images = _frame(
        [
            ("a", "p1", 0b0000, "train"),
            ("b", "p1", 0b0000, "test"),  # exact copy of a
            ("c", "p2", 0xFFFF_0000, "train"),
            ("d", "p3", 0xFFFF_0003, "val"),  # 2 bits from c: near
            ("e", "p4", 0x0F0F_0F0F_0F0F_0F0F, "train"),  # far from everything
        ]
    )
    groups = find_duplicate_groups(images, max_distance=4)
    assert groups.to_dict("records") == [
        {"group_id": 0, "kind": "exact", "image_id": "a"},
        {"group_id": 0, "kind": "exact", "image_id": "b"},
        {"group_id": 1, "kind": "near", "image_id": "c"},
        {"group_id": 1, "kind": "near", "image_id": "d"},
    ]
    assert find_duplicate_groups(images, max_distance=1)["image_id"].tolist() == ["a", "b"]
    assert find_duplicate_groups(images, max_distance=-1)["image_id"].tolist() == ["a", "b"]


def test_thumbnail_confirmation_rejects_lookalikes() -> None:
    images = _frame([("a", "p1", 0, "train"), ("b", "p2", 1, "test")])
    rng = np.random.default_rng(0)
    same = rng.integers(0, 255, (2, 8, 8)).astype(np.uint8)
    same[1] = np.clip(same[0].astype(int) + 3, 0, 255)
    other = rng.integers(0, 255, (2, 8, 8)).astype(np.uint8)
    assert len(find_duplicate_groups(images, 4, thumbnails=same)) == 2
    assert len(find_duplicate_groups(images, 4, thumbnails=other)) == 0


def test_near_search_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    base = [int(x) for x in rng.integers(0, 2**63, 40)]
    hashes = base + [h ^ (1 << int(rng.integers(0, 64))) ^ (1 << int(rng.integers(0, 64))) for h in base[:10]]
    images = _frame([(f"i{k:02d}", f"p{k}", h, "train") for k, h in enumerate(hashes)])
    got = set(find_duplicate_groups(images, 3)["image_id"])
    brute = {
        f"i{a:02d}" for a in range(len(hashes)) for b in range(len(hashes)) if a != b and (hashes[a] ^ hashes[b]).bit_count() <= 3
    }
    assert got == brute and len(got) >= 20


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denom = float(np.sqrt((a @ a) * (b @ b)))
    return float(a @ b) / denom if denom > 0 else float(np.array_equal(a, b))  # centred: two constants are equal


def test_near_groups_with_thumbnails_match_every_pair_compared() -> None:
    """Clusters of noisy copies (as in augmented datasets), look-alikes that are not copies, and constant images:
    the grouping equals the one from comparing every pair (Hamming distance, then Pearson correlation)."""
    rng = np.random.default_rng(5)
    bases = rng.integers(0, 256, (6, 16, 16)).astype(np.int16)
    thumbs, hashes = [], []
    for k in range(120):
        cluster = k % 6
        noise = rng.integers(-3 if k % 5 else -60, 4 if k % 5 else 61, (16, 16))  # every fifth: too noisy to be a copy
        thumbs.append(np.clip(bases[cluster] + noise, 0, 255).astype(np.uint8))
        hashes.append((cluster * 0x1111_1111_1111) ^ (1 << int(rng.integers(0, 64))))
    for value in (0, 0, 255):  # blank images (constant thumbnails) with one hash: all alike
        thumbs.append(np.full((16, 16), value, np.uint8))
        hashes.append(0xABCD)
    thumbnails = np.stack(thumbs)
    images = _frame([(f"i{k:03d}", f"p{k}", h, "train") for k, h in enumerate(hashes)])
    groups = find_duplicate_groups(images, 4, thumbnails=thumbnails, min_correlation=0.97)

    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in range(len(hashes)):
        for b in range(a + 1, len(hashes)):
            if (hashes[a] ^ hashes[b]).bit_count() <= 4 and _pearson(thumbnails[a], thumbnails[b]) >= 0.97:
                parent[max(root(a), root(b))] = min(root(a), root(b))
    expected: dict[int, set[str]] = {}
    for k in range(len(hashes)):
        expected.setdefault(root(k), set()).add(f"i{k:03d}")
    got = [set(g["image_id"]) for _, g in groups.groupby("group_id")]
    assert sorted(map(sorted, got)) == sorted(sorted(m) for m in expected.values() if len(m) > 1)
    assert {"i120", "i121", "i122"} in got
    assert len(got) >= 6


def test_drop_later_split_policy() -> None:
    images = _frame([("a", "p1", 0, "train"), ("b", "p1", 0, "test"), ("c", "p1", 0, "val"), ("d", "p9", 2**40, "test")])
    groups = find_duplicate_groups(images, 0)
    assert choose_dropped(groups, images, "keep") == set()
    assert choose_dropped(groups, images, "drop_later_split") == {"b", "c"}
    with pytest.raises(ValueError, match="policy"):
        choose_dropped(groups, images, "drop_all")

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mura.data.sources import list_fracture, list_mura
from mura.data.synthetic_scale import FRACTURE_SPLITS, MURA_V11, scaled, write_fracture_at_scale, write_mura_at_scale


def test_the_table_holds_mura_v11s_totals() -> None:
    studies = {split: sum(c.normal + c.abnormal for c in parts.values()) for split, parts in MURA_V11.items()}
    images = {split: sum(c.images for c in parts.values()) for split, parts in MURA_V11.items()}
    assert studies == {"train": 13457, "valid": 1199} and images == {"train": 36808, "valid": 3197}
    assert sum(FRACTURE_SPLITS.values()) == 10580


def test_scaled_keeps_both_classes_and_a_view_per_study() -> None:
    small = scaled(MURA_V11, 0.0001)
    for parts in small.values():
        for c in parts.values():
            assert c.normal >= 1 and c.abnormal >= 1 and c.images >= c.normal + c.abnormal


@pytest.fixture(scope="module")
def at_scale(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("scale")
    write_mura_at_scale(out, seed=3, scale=0.002, workers=2)
    return out, list_mura(out / "MURA-v1.1")


def test_mura_at_scale_has_the_tables_counts_per_split_part_and_label(at_scale: tuple[Path, list]) -> None:
    _, entries = at_scale
    expected = scaled(MURA_V11, 0.002)
    images = Counter((e.source_split, e.body_part) for e in entries)
    studies = Counter((s, p, label) for s, p, label, _ in {(e.source_split, e.body_part, e.label, e.study_id) for e in entries})
    for split, parts in expected.items():
        for part, c in parts.items():
            assert images[(split, part)] == c.images, (split, part)
            assert studies[(split, part, 0)] == c.normal and studies[(split, part, 1)] == c.abnormal, (split, part)


def test_mura_at_scale_is_a_function_of_the_seed_not_of_the_processes(at_scale: tuple[Path, list], tmp_path: Path) -> None:
    out, entries = at_scale
    write_mura_at_scale(tmp_path, seed=3, scale=0.002, workers=1)
    for name in ("train_image_paths.csv", "valid_labeled_studies.csv", "synthetic_findings.coco.json"):
        assert (tmp_path / "MURA-v1.1" / name).read_bytes() == (out / "MURA-v1.1" / name).read_bytes()
    for entry in entries[:: max(1, len(entries) // 10)]:
        assert (tmp_path / entry.path).read_bytes() == entry.file.read_bytes()


def test_fracture_at_scale_has_the_real_split_proportions(tmp_path: Path) -> None:
    write_fracture_at_scale(tmp_path, seed=3, scale=0.005, workers=1)
    entries = list_fracture(tmp_path / "Bone_Fracture_Binary_Classification")
    splits = Counter(e.source_split for e in entries)
    assert splits == {split: round(n * 0.005) for split, n in FRACTURE_SPLITS.items()}
    assert {e.label for e in entries} == {0, 1}

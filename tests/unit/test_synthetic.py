from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mura.data.sources import BODY_PARTS, SYNTHETIC_MARKER, list_fracture, list_mura
from mura.data.synthetic import render_phantom, write_mura


def test_layout_and_marker(synthetic_raw: Path) -> None:
    mura = synthetic_raw / "MURA-v1.1"
    assert (mura / SYNTHETIC_MARKER).read_text().startswith("SYNTHETIC DATA - NOT PATIENT DATA")
    first = (mura / "train_image_paths.csv").read_text().splitlines()[0]
    assert first.startswith("MURA-v1.1/train/XR_") and first.endswith(".png")
    study_line = (mura / "train_labeled_studies.csv").read_text().splitlines()[0]
    assert study_line.endswith(("/,0", "/,1"))
    entries = list_mura(mura)
    assert {e.source_split for e in entries} == {"train", "valid"}
    views: dict[str, int] = {}
    for e in entries:
        views.setdefault(e.study_id, 0)
        views[e.study_id] += 1
    assert 1 <= min(views.values()) and max(views.values()) <= 4
    fracture = list_fracture(synthetic_raw / "Bone_Fracture_Binary_Classification")
    assert {Path(e.path).suffix for e in fracture} == {".jpg", ".png"}


def test_deterministic_whatever_the_encoding_processes(tmp_path: Path) -> None:
    a = write_mura(tmp_path / "a", seed=3, patients=3, workers=2)
    b = write_mura(tmp_path / "b", seed=3, patients=3, workers=1)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


@pytest.mark.parametrize("part", BODY_PARTS)
def test_no_size_or_intensity_shortcut(part: str) -> None:
    rng = np.random.default_rng(0)
    normal = [render_phantom(part, False, rng) for _ in range(12)]
    abnormal = [render_phantom(part, True, rng) for _ in range(12)]
    # Sizes come from the same range whatever the label.
    for images in (normal, abnormal):
        assert all(280 <= min(i.shape) and max(i.shape) <= 512 for i in images)
    # Mean brightness is not a give-away: the class means are within the spread of either class.
    mean_n, mean_a = (np.array([i.mean() for i in s]) for s in (normal, abnormal))
    assert abs(mean_n.mean() - mean_a.mean()) < 2 * max(mean_n.std(), mean_a.std()) + 3

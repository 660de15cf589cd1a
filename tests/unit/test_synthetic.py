from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


def test_every_abnormal_phantom_has_its_findings_boxed_and_normal_ones_none() -> None:
    from mura.data.sources import BODY_PARTS
    from mura.data.synthetic import FINDING_KINDS, render_phantom_annotated

    seen = set()
    for seed in range(12):
        for part in BODY_PARTS:
            for abnormal in (False, True):
                a, b = np.random.default_rng(seed), np.random.default_rng(seed)
                gray, findings = render_phantom_annotated(part, abnormal, a)
                # the boxes draw no random number: the picture and the generator's state are those of render_phantom
                assert np.array_equal(gray, render_phantom(part, abnormal, b))
                assert a.bit_generator.state == b.bit_generator.state
                assert bool(findings) == abnormal
                h, w = gray.shape
                for finding in findings:
                    x0, y0, x1, y1 = finding.box
                    assert finding.kind in FINDING_KINDS and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                    assert (x1 - x0) * (y1 - y0) < 0.5 * h * w  # a finding, not the whole picture
                    seen.add(finding.kind)
    assert seen == set(FINDING_KINDS)


def test_write_mura_writes_the_findings_as_coco_beside_the_csvs(tmp_path: Path) -> None:
    from mura.data.annotations import read_coco_boxes
    from mura.data.synthetic import FINDINGS_FILE

    root = write_mura(tmp_path, seed=3, patients=10, defects=False, workers=1)
    boxes = read_coco_boxes(root / FINDINGS_FILE)
    listed = [line for split in ("train", "valid") for line in (root / f"{split}_image_paths.csv").read_text().split()]
    assert sorted(set(boxes["file_name"])) == sorted(listed)  # every image, normal ones without a box
    with_box = boxes.dropna(subset=["kind"])
    assert not with_box.empty and all("_positive/" in name for name in with_box["file_name"])
    assert boxes.loc[boxes["kind"].isna(), "file_name"].str.contains("_negative/").all()
    for row in with_box.itertuples():
        width, height = Image.open(tmp_path / row.file_name).size
        assert (row.width, row.height) == (width, height) and 0 <= row.x0 < row.x1 <= width and 0 <= row.y0 < row.y1 <= height


def test_conspicuity_one_draws_the_phantoms_as_before_and_more_enlarges_only_the_findings() -> None:
    from mura.data.synthetic import render_phantom_annotated

    def area(findings: list) -> int:  # type: ignore[type-arg]
        return sum((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in findings)

    larger = 0
    for seed in range(10):
        for part in BODY_PARTS:
            plain, same, bold = (np.random.default_rng(seed) for _ in range(3))
            for abnormal in (False, True):
                gray, findings = render_phantom_annotated(part, abnormal, plain)
                gray_1, findings_1 = render_phantom_annotated(part, abnormal, same, conspicuity=1.0)
                gray_2, findings_2 = render_phantom_annotated(part, abnormal, bold, conspicuity=2.0)
                assert np.array_equal(gray, gray_1) and findings == findings_1  # 1: byte for byte the default
                assert gray.shape == gray_2.shape and plain.bit_generator.state == bold.bit_generator.state
                assert [f.kind for f in findings] == [f.kind for f in findings_2]  # same draws: same finding
                if not abnormal:
                    assert np.array_equal(gray, gray_2)  # normal phantoms do not depend on it
                else:
                    larger += area(findings_2) > area(findings)
    assert larger >= 0.8 * 10 * len(BODY_PARTS)  # the boxes grow with the findings (clipped at the border at times)

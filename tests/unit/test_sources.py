from __future__ import annotations

from pathlib import Path

import pytest

from mura.data.sources import BODY_PARTS, is_synthetic, list_fracture, list_mura, normalize_body_part, parse_mura_path
from mura.errors import DataError

PARSE_CASES = [
    (
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png",
        "train",
        "XR_WRIST",
        "patient00001",
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive",
        1,
    ),
    (
        "MURA-v1.1/valid/XR_FINGER/patient11185/study2_negative/",
        "valid",
        "XR_FINGER",
        "patient11185",
        "MURA-v1.1/valid/XR_FINGER/patient11185/study2_negative",
        0,
    ),
    (
        "MURA-v1.1/train/XR_SHOULDER/patient00007/study10_negative/image3.png",
        "train",
        "XR_SHOULDER",
        "patient00007",
        "MURA-v1.1/train/XR_SHOULDER/patient00007/study10_negative",
        0,
    ),
]


@pytest.mark.parametrize("path,split,part,patient,study,label", PARSE_CASES)
def test_parse_mura_path(path: str, split: str, part: str, patient: str, study: str, label: int) -> None:
    parsed = parse_mura_path(path)
    assert (parsed.split, parsed.body_part, parsed.patient_id, parsed.study_id, parsed.label) == (
        split,
        part,
        patient,
        study,
        label,
    )


@pytest.mark.parametrize(
    "path",
    [
        "MURA-v1.1/train/XR_KNEE/patient00001/study1_positive/image1.png",  # not an upper-extremity part
        "MURA-v1.1/test/XR_WRIST/patient00001/study1_positive/image1.png",  # no such split
        "MURA-v1.1/train/XR_WRIST/patient00001/study1_maybe/image1.png",
        "MURA-v1.1/train/XR_WRIST/study1_positive/image1.png",
        "",
    ],
)
def test_parse_mura_path_rejects(path: str) -> None:
    with pytest.raises(DataError, match="expected MURA-v1.1"):
        parse_mura_path(path)


def _tiny_mura(root: Path, studies_csv: str, images_csv: str) -> Path:
    mura = root / "MURA-v1.1"
    mura.mkdir(parents=True)
    for split in ("train", "valid"):
        (mura / f"{split}_labeled_studies.csv").write_text(studies_csv.replace("SPLIT", split))
        (mura / f"{split}_image_paths.csv").write_text(images_csv.replace("SPLIT", split))
    return mura


def test_list_mura_reads_csvs(tmp_path: Path) -> None:
    mura = _tiny_mura(
        tmp_path,
        "MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/,1\n",
        "MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/image1.png\n"
        "MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/image2.png\n",
    )
    entries = list_mura(mura)
    assert [e.source_split for e in entries] == ["train", "train", "valid", "valid"]
    assert {e.label for e in entries} == {1}
    assert entries[0].file == tmp_path / "MURA-v1.1/train/XR_HAND/patient00001/study1_positive/image1.png"
    assert entries[0].image_id.startswith("mura:MURA-v1.1/train/")
    assert list_mura(tmp_path) == entries  # the parent folder is accepted too


@pytest.mark.parametrize(
    "studies,images,message",
    [
        ("", "MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/image1.png\n", "is empty"),
        ("MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/\n", "x\n", "expected 2 column"),
        ("MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/,0\n", "x\n", "contradicts"),
        ("MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/,yes\n", "x\n", "not 0 or 1"),
        ("MURA-v1.1/SPLIT/XR_HAND/patient00001/study1_positive/,1\n", "images/whatever.png\n", "cannot parse"),
    ],
)
def test_list_mura_bad_csv_is_one_line_error(tmp_path: Path, studies: str, images: str, message: str) -> None:
    mura = _tiny_mura(tmp_path, studies, images)
    with pytest.raises(DataError, match=message) as info:
        list_mura(mura)
    assert "\n" not in str(info.value)
    assert ".csv" in str(info.value)


def test_list_mura_missing_csv(tmp_path: Path) -> None:
    (tmp_path / "MURA-v1.1").mkdir()
    with pytest.raises(DataError, match="train_labeled_studies.csv"):
        list_mura(tmp_path)


def _fracture_tree(root: Path) -> Path:
    inner = root / "Bone_Fracture_Binary_Classification" / "Bone_Fracture_Binary_Classification"
    for split in ("train", "val", "test"):
        for label in ("fractured", "not fractured"):
            (inner / split / label).mkdir(parents=True)
            (inner / split / label / "a.jpg").write_bytes(b"x")
            (inner / split / label / "b.png").write_bytes(b"x")
            (inner / split / label / "._a.jpg").write_bytes(b"junk")
        (inner / split / ".DS_Store").write_bytes(b"junk")
    return root / "Bone_Fracture_Binary_Classification"


def test_list_fracture_double_nesting_space_and_junk(tmp_path: Path) -> None:
    entries = list_fracture(_fracture_tree(tmp_path))
    assert len(entries) == 12
    assert {e.source_split for e in entries} == {"train", "val", "test"}
    by_path = {e.path: e.label for e in entries}
    assert by_path["train/not fractured/a.jpg"] == 0
    assert by_path["val/fractured/b.png"] == 1
    assert all(e.patient_id == e.study_id for e in entries)


def test_list_fracture_unknown_label_folder(tmp_path: Path) -> None:
    outer = _fracture_tree(tmp_path)
    (outer / "Bone_Fracture_Binary_Classification" / "test" / "broken").mkdir()
    with pytest.raises(DataError, match="unknown label folder .*broken"):
        list_fracture(outer)


def test_list_fracture_missing_split(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="missing folder .*val"):
        list_fracture(tmp_path)


def test_synthetic_marker(synthetic_raw: Path, tmp_path: Path) -> None:
    assert is_synthetic(synthetic_raw / "MURA-v1.1")
    assert not is_synthetic(tmp_path)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("WRIST", "XR_WRIST"),
        ("wrist", "XR_WRIST"),
        (" XR_Wrist ", "XR_WRIST"),
        ("upper arm", "XR_UPPER_ARM"),
        ("", None),
        (None, None),
        ("  ", None),
    ],
)
def test_normalize_body_part(value: str | None, expected: str | None) -> None:
    assert normalize_body_part(value) == expected


def test_body_parts_are_the_seven_regions() -> None:
    assert len(BODY_PARTS) == 7 and all(p.startswith("XR_") for p in BODY_PARTS)

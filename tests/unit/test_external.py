"""External test sets in their real layouts (FracAtlas, GRAZPEDWRI-DX), on phantoms written here: listing, ingest, split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mura.config import DataParams, IngestParams
from mura.data.external import external_boxes, list_external, list_fracatlas, list_grazpedwri
from mura.data.ingest import ingest
from mura.data.split import make_split
from mura.errors import DataError
from tests.external_layouts import write_fracatlas, write_grazpedwri


def test_fracatlas_keeps_the_regions_mura_has_with_their_fracture_label(tmp_path: Path) -> None:
    entries = list_fracatlas(write_fracatlas(tmp_path))
    assert [(e.path.split("/")[-1], e.body_part, e.label) for e in entries] == [
        ("IMG0000001.jpg", "XR_HAND", 1),
        ("IMG0000002.jpg", "XR_HAND", 0),
        ("IMG0000003.jpg", "XR_SHOULDER", 1),
        ("IMG0000007.jpg", "XR_SHOULDER", 0),
    ]
    assert all(e.file.is_file() and e.source_split == "external" and e.patient_id == e.study_id for e in entries)


def test_grazpedwri_groups_a_patients_views_of_one_time_into_a_study(tmp_path: Path) -> None:
    entries = list_grazpedwri(write_grazpedwri(tmp_path))
    assert [e.label for e in entries] == [1, 1, 0] and {e.body_part for e in entries} == {"XR_WRIST"}
    assert entries[0].study_id == entries[1].study_id != entries[2].study_id
    assert entries[0].patient_id == "grazpedwri:1" and all(e.file.is_file() for e in entries)
    assert set(list_external(tmp_path)) == {"grazpedwri"} and list_external(tmp_path / "none") == {}


def test_external_boxes_read_fracatlas_coco_and_grazpedwri_yolo_fractures(tmp_path: Path) -> None:
    write_fracatlas(tmp_path)
    write_grazpedwri(tmp_path)
    boxes = external_boxes(tmp_path)
    rows = {(r.file_name, None if pd.isna(r.kind) else (r.x0, r.y0, r.x1, r.y1)) for r in boxes.itertuples(index=False)}
    assert rows == {
        ("images/Fractured/IMG0000001.jpg", (4.0, 6.0, 14.0, 18.0)),  # COCO x, y, w, h -> x0, y0, x1, y1
        ("images/Fractured/IMG0000003.jpg", (20.0, 2.0, 28.0, 32.0)),
        ("images/Non_fractured/IMG0000002.jpg", None),  # no fracture: an image without a box (a negative)
        ("images/Non_fractured/IMG0000007.jpg", None),  # (IMG0000004, a leg, is not listed)
        ("images_part1/0001_1297860395_01_WRI-L1_M014.png", (8.0, 6.0, 24.0, 14.0)),  # YOLO class 3 on 32 x 40; text left out
        ("images_part2/0001_1297860395_01_WRI-L2_M014.png", (4.0, 10.0, 12.0, 30.0)),
        ("images_part2/0001_1297860395_01_WRI-L2_M014.png", (20.0, 15.0, 28.0, 25.0)),
        ("images_part1/0002_1111111111_01_WRI-R1_F009.png", None),
    }
    assert set(boxes["width"]) == {32} and set(boxes["height"]) == {40}


def test_external_sets_without_their_annotations_give_no_boxes(tmp_path: Path) -> None:
    write_fracatlas(tmp_path, boxes=False)
    write_grazpedwri(tmp_path, boxes=False)
    assert external_boxes(tmp_path).empty and external_boxes(tmp_path / "none").empty


def test_a_csv_without_its_columns_is_one_line_naming_them(tmp_path: Path) -> None:
    folder = tmp_path / "FracAtlas"
    folder.mkdir()
    (folder / "dataset.csv").write_text("image_id,hand\nIMG1.jpg,1\n")
    with pytest.raises(DataError, match="missing column"):
        list_fracatlas(folder)


def test_ingest_and_split_put_the_external_sets_in_their_own_split(synthetic_raw: Path, tmp_path: Path) -> None:
    external = tmp_path / "external"
    write_fracatlas(external)
    write_grazpedwri(external)
    data = DataParams(
        mura_dir=str(synthetic_raw / "MURA-v1.1"), fracture_dir=str(tmp_path / "empty"), image_size=16, external_dir=str(external)
    )
    (tmp_path / "empty").mkdir()
    result = ingest(data, IngestParams(workers=1), tmp_path / "pixels.npy", progress=False)
    images = result.images
    assert set(images["dataset"]) == {"mura", "fracatlas", "grazpedwri"}
    assert result.summary["datasets"]["fracatlas"]["ingested"] == 4 and result.summary["datasets"]["grazpedwri"]["ingested"] == 3
    split = make_split(images, 0.1, seed=0).set_index("image_id")["split"]
    assert set(split[images.loc[images["dataset"] != "mura", "image_id"]]) == {"external"}
    assert "external" not in set(split[images.loc[images["dataset"] == "mura", "image_id"]])

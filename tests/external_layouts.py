"""FracAtlas and GRAZPEDWRI-DX phantoms in the datasets' real layouts (nothing downloaded): for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def _image(path: Path, value: int, suffix_mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((40, 32), value, np.uint8)
    pixels[5:15, 5:25] = 255 - value  # something to decode that is not flat
    Image.fromarray(pixels, suffix_mode).save(path)


FRACATLAS_BOXES = {
    "IMG0000001.jpg": [4, 6, 10, 12],
    "IMG0000003.jpg": [20, 2, 8, 30],
    "IMG0000004.jpg": [1, 1, 5, 5],
}  # COCO x, y, w, h
GRAZPEDWRI_LABELS = {  # YOLO: class cx cy w h (fractions); class 3 = fracture, 8 = text
    "0001_1297860395_01_WRI-L1_M014": "3 0.5 0.25 0.5 0.2\n8 0.1 0.9 0.1 0.05\n",
    "0001_1297860395_01_WRI-L2_M014": "8 0.1 0.9 0.1 0.05\n3 0.25 0.5 0.25 0.5\n3 0.75 0.5 0.25 0.25\n",
    "0002_1111111111_01_WRI-R1_F009": "8 0.1 0.9 0.1 0.05\n",
}


def write_fracatlas(root: Path, boxes: bool = True) -> Path:
    """FracAtlas's layout: dataset.csv + images/{Fractured,Non_fractured}/IMG*.jpg (40 x 32); a leg, a hip and a mixed
    image too; with ``boxes``, the fractures' boxes in ``Annotations/COCO JSON/COCO_fracture_masks.json``."""
    folder = root / "FracAtlas"
    rows = [
        ("IMG0000001.jpg", {"hand": 1}, 1),
        ("IMG0000002.jpg", {"hand": 1}, 0),
        ("IMG0000003.jpg", {"shoulder": 1}, 1),
        ("IMG0000004.jpg", {"leg": 1}, 1),  # not a MURA region
        ("IMG0000005.jpg", {"hip": 1}, 0),
        ("IMG0000006.jpg", {"hand": 1, "mixed": 1, "leg": 1}, 0),
        ("IMG0000007.jpg", {"shoulder": 1}, 0),
    ]
    records = []
    for k, (name, regions, fractured) in enumerate(rows):
        _image(folder / "images" / ("Fractured" if fractured else "Non_fractured") / name, 40 + 20 * k)
        base = dict.fromkeys(("hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan"), 0)
        records.append({"image_id": name, **base, **regions, "fractured": fractured, "fracture_count": fractured})
    pd.DataFrame(records).to_csv(folder / "dataset.csv", index=False)
    if boxes:
        names = [name for name, _, _ in rows]
        coco = {
            "images": [{"id": k + 1, "file_name": name, "width": 32, "height": 40} for k, name in enumerate(names)],
            "annotations": [
                {"id": k + 1, "image_id": names.index(name) + 1, "category_id": 1, "bbox": box, "iscrowd": 0}
                for k, (name, box) in enumerate(FRACATLAS_BOXES.items())
            ],
            "categories": [{"id": 1, "name": "fractured"}],
        }
        (folder / "Annotations" / "COCO JSON").mkdir(parents=True)
        (folder / "Annotations" / "COCO JSON" / "COCO_fracture_masks.json").write_text(json.dumps(coco))
    return folder


def write_grazpedwri(root: Path, boxes: bool = True) -> Path:
    """GRAZPEDWRI-DX's layout: dataset.csv (fracture_visible 1 or empty) + PNGs (40 x 32) unzipped from images_part1/2;
    with ``boxes``, the YOLO labels of folder_structure.zip (``folder_structure/yolov5/labels/<filestem>.txt``)."""
    folder = root / "GRAZPEDWRI-DX"
    stems = [
        ("0001_1297860395_01_WRI-L1_M014", 1),
        ("0001_1297860395_01_WRI-L2_M014", 1),
        ("0002_1111111111_01_WRI-R1_F009", None),
    ]
    records = []
    for k, (stem, fracture) in enumerate(stems):
        _image(folder / f"images_part{k % 2 + 1}" / f"{stem}.png", 30 + 50 * k)
        records.append(
            {"filestem": stem, "patient_id": int(stem[:4]), "gender": "M", "fracture_visible": fracture, "metal": None}
        )
    pd.DataFrame(records).to_csv(folder / "dataset.csv", index=False)
    if boxes:
        labels = folder / "folder_structure" / "yolov5" / "labels"
        labels.mkdir(parents=True)
        for stem, text in GRAZPEDWRI_LABELS.items():
            (labels / f"{stem}.txt").write_text(text)
    return folder

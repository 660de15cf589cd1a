"""Boxes of findings in COCO object-detection JSON: the phantoms' planted findings, and FracAtlas's (same format).

:func:`read_coco_boxes` turns a COCO file into one row per box, with its image's file name and
size, so a localisation metric can join the boxes to the images it scores. Images listed without
an annotation (normal ones) are kept as rows without a box, so "no finding here" is data too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mura.errors import DataError

__all__ = ["BOX_COLUMNS", "read_coco_boxes"]

BOX_COLUMNS = ("file_name", "width", "height", "kind", "x0", "y0", "x1", "y1")


def read_coco_boxes(path: str | Path) -> pd.DataFrame:
    """One row per box (``x1``/``y1`` exclusive, pixels) and one row without a box per image that has none.

    Raises:
        DataError: the file is missing, not JSON, or not COCO (no images/categories, an annotation of an
            unknown image or category, a negative box).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing annotation file {path}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("categories"), list):
        raise DataError(f"{path}: not COCO JSON (needs 'images' and 'categories' lists)")
    images = {int(i["id"]): i for i in doc["images"]}
    categories = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
    rows: list[tuple[object, ...]] = []
    boxed: set[int] = set()
    for ann in doc.get("annotations", []):
        image = images.get(int(ann["image_id"]))
        kind = categories.get(int(ann["category_id"]))
        x, y, w, h = (float(v) for v in ann["bbox"])
        if image is None or kind is None or w < 0 or h < 0:
            raise DataError(f"{path}: annotation {ann.get('id')} names an unknown image or category, or has a negative box")
        boxed.add(int(ann["image_id"]))
        rows.append((image["file_name"], int(image["width"]), int(image["height"]), kind, x, y, x + w, y + h))
    for image_id, image in images.items():
        if image_id not in boxed:
            rows.append((image["file_name"], int(image["width"]), int(image["height"]), None, None, None, None, None))
    return pd.DataFrame(rows, columns=list(BOX_COLUMNS))

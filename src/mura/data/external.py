"""External test sets with their own real layouts: FracAtlas and GRAZPEDWRI-DX (both CC BY 4.0, boxes included).

Both are dropped, as downloaded and unzipped, into ``data.external_dir`` (``data/external``):

- **FracAtlas** (Abedeen et al., Scientific Data 2023; figshare 22363012): ``FracAtlas/dataset.csv``
  (``image_id`` and 0/1 columns ``hand``, ``leg``, ``hip``, ``shoulder``, ``mixed``, ``hardware``,
  ``multiscan``, ``fractured``, …) and ``FracAtlas/images/{Fractured,Non_fractured}/<image_id>``.
  Only the body parts MURA has are kept: ``hand`` → XR_HAND, ``shoulder`` → XR_SHOULDER (``leg``,
  ``hip`` and ``mixed`` images are left out). No patient ids: each image is its own patient and study.
- **GRAZPEDWRI-DX** (Nagy et al., Scientific Data 2022; figshare 14825193): ``GRAZPEDWRI-DX/dataset.csv``
  (``filestem``, ``patient_id``, ``fracture_visible``, …) and the PNGs of ``images_part*.zip``,
  unzipped into ``GRAZPEDWRI-DX/images/`` (or left in ``images_part<N>/`` folders). All are
  paediatric wrists (XR_WRIST); a study is a patient's radiographs of one time stamp (the
  filestem's first two fields).

Both ship boxes, read by :func:`external_boxes` for the localisation measures: FracAtlas's COCO file
(``FracAtlas/Annotations/COCO JSON/*.json``, its fractures) and GRAZPEDWRI-DX's YOLO labels
(``GRAZPEDWRI-DX/folder_structure/yolov5/labels/<filestem>.txt``, class 3 = fracture; unzipped from
``folder_structure.zip``).

The label is the fracture label (FracAtlas ``fractured``, GRAZPEDWRI-DX ``fracture_visible``):
a narrower question than MURA's "abnormal", so the external figures measure how the model's
abnormality score transfers to fracture detection on other hospitals' images. Every image is in
the ``external`` split: never trained on, never used to choose a threshold, reported apart from
MURA's test.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from mura.data.annotations import BOX_COLUMNS, read_coco_boxes
from mura.data.sources import ImageEntry
from mura.errors import DataError

__all__ = [
    "EXTERNAL_DATASETS",
    "EXTERNAL_SPLIT",
    "FRACATLAS_PARTS",
    "external_boxes",
    "list_external",
    "list_fracatlas",
    "list_grazpedwri",
]

EXTERNAL_SPLIT = "external"
FRACATLAS_PARTS = {"hand": "XR_HAND", "shoulder": "XR_SHOULDER"}  # the FracAtlas regions MURA has
FRACATLAS_REGIONS = ("hand", "leg", "hip", "shoulder")
FRACATLAS_DIRS = {1: "Fractured", 0: "Non_fractured"}
EXTERNAL_DATASETS = {"fracatlas": "FracAtlas", "grazpedwri": "GRAZPEDWRI-DX"}  # dataset name → its folder
FRACATLAS_COCO = "Annotations/COCO JSON"  # COCO_fracture_masks.json: the fractures' boxes (and masks)
GRAZPEDWRI_LABELS = "folder_structure/yolov5/labels"  # <filestem>.txt, YOLO: class cx cy w h (fractions)
# meta.yaml's names: boneanomaly, bonelesion, foreignbody, fracture, metal, periostealreaction, pronatorsign, softtissue, text
GRAZPEDWRI_FRACTURE = 3


def _read_csv(path: Path, needed: set[str]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot be read as CSV ({type(exc).__name__})") from None
    missing = needed - set(frame.columns)
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return frame


def _flag(value: object) -> int:
    """A 0/1 cell (1, 1.0, '1'); empty or anything else is 0."""
    try:
        return int(float(str(value)) == 1.0)
    except ValueError:
        return 0


def list_fracatlas(root: Path) -> list[ImageEntry]:
    """FracAtlas's hand and shoulder images (``root`` holds ``dataset.csv`` and ``images/``), in CSV order.

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    csv_path = Path(root) / "dataset.csv"
    frame = _read_csv(csv_path, {"image_id", "fractured", *FRACATLAS_REGIONS})
    entries = []
    for row in frame.to_dict("records"):
        regions = [r for r in FRACATLAS_REGIONS if _flag(row[r])]
        if len(regions) != 1 or regions[0] not in FRACATLAS_PARTS or _flag(row.get("mixed", 0)):
            continue
        label = _flag(row["fractured"])
        rel = f"images/{FRACATLAS_DIRS[label]}/{str(row['image_id']).strip()}"
        entries.append(
            ImageEntry(
                dataset="fracatlas",
                source_split=EXTERNAL_SPLIT,
                body_part=FRACATLAS_PARTS[regions[0]],
                patient_id=f"fracatlas:{row['image_id']}",
                study_id=f"fracatlas:{row['image_id']}",
                label=label,
                path=rel,
                file=Path(root) / rel,
            )
        )
    return entries


def list_grazpedwri(root: Path) -> list[ImageEntry]:
    """GRAZPEDWRI-DX's wrist radiographs (``root`` holds ``dataset.csv`` and the PNGs), in CSV order.

    Raises:
        DataError: the CSV is missing or lacks a column.
    """
    root = Path(root)
    frame = _read_csv(root / "dataset.csv", {"filestem", "patient_id", "fracture_visible"})
    found = {p.stem: p for p in root.glob("images*/**/*.png")}
    entries = []
    for row in frame.to_dict("records"):
        stem = str(row["filestem"]).strip()
        file = found.get(stem, root / "images" / f"{stem}.png")  # a missing file is quarantined by ingest
        study = "_".join(stem.split("_")[:2])
        entries.append(
            ImageEntry(
                dataset="grazpedwri",
                source_split=EXTERNAL_SPLIT,
                body_part="XR_WRIST",
                patient_id=f"grazpedwri:{row['patient_id']}",
                study_id=f"grazpedwri:{study}",
                label=_flag(row["fracture_visible"]),
                path=file.relative_to(root).as_posix(),
                file=file,
            )
        )
    return entries


def list_external(external_dir: Path) -> dict[str, list[ImageEntry]]:
    """The external datasets present under ``external_dir`` (``FracAtlas/``, ``GRAZPEDWRI-DX/``): name → entries."""
    listers = {"fracatlas": list_fracatlas, "grazpedwri": list_grazpedwri}
    out = {}
    for name, folder in EXTERNAL_DATASETS.items():
        root = Path(external_dir) / folder
        if (root / "dataset.csv").is_file():
            out[name] = listers[name](root)
    return out


def _fracatlas_boxes(root: Path, entries: list[ImageEntry]) -> list[tuple[object, ...]]:
    files = sorted((root / FRACATLAS_COCO).glob("*.json"))
    if not files:
        return []
    coco = pd.concat([read_coco_boxes(f) for f in files], ignore_index=True)
    by_name = {Path(e.path).name: e for e in entries}
    rows: list[tuple[object, ...]] = []
    boxed = set()
    for row in coco.itertuples(index=False):
        entry = by_name.get(Path(str(row.file_name)).name)
        if entry is not None and entry.label == 1 and row.kind is not None and not pd.isna(row.kind):
            rows.append((entry.path, row.width, row.height, "fracture", row.x0, row.y0, row.x1, row.y1))
            boxed.add(entry.path)
    return rows + _unboxed(entries, boxed)


def _unboxed(entries: list[ImageEntry], boxed: set[str]) -> list[tuple[object, ...]]:
    """Rows without a box for the images labelled without fracture (a fractured image without a box is left out)."""
    rows: list[tuple[object, ...]] = []
    for entry in entries:
        if entry.label == 0 and entry.path not in boxed and entry.file.is_file():
            with Image.open(entry.file) as image:  # the header only: the size
                width, height = image.size
            rows.append((entry.path, width, height, None, None, None, None, None))
    return rows


def _grazpedwri_boxes(root: Path, entries: list[ImageEntry]) -> list[tuple[object, ...]]:
    labels = root / GRAZPEDWRI_LABELS
    if not labels.is_dir():
        return []
    rows: list[tuple[object, ...]] = []
    boxed = set()
    for entry in entries:
        label_file = labels / f"{Path(entry.path).stem}.txt"
        if entry.label != 1 or not label_file.is_file() or not entry.file.is_file():
            continue
        with Image.open(entry.file) as image:
            width, height = image.size
        for line in label_file.read_text().splitlines():
            fields = line.split()
            if len(fields) < 5 or int(float(fields[0])) != GRAZPEDWRI_FRACTURE:
                continue
            cx, cy, w, h = (float(v) for v in fields[1:5])
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            rows.append((entry.path, width, height, "fracture", *box))
            boxed.add(entry.path)
    return rows + _unboxed(entries, boxed)


def external_boxes(external_dir: Path) -> pd.DataFrame:
    """The fracture boxes of the external datasets present, as :func:`mura.data.annotations.read_coco_boxes` rows.

    ``file_name`` is the image's path as its dataset lists it (images.csv's ``path``); pixels of the
    original image. Images labelled without fracture are rows without a box ("nothing here" is data
    too); a fractured image whose annotation has no fracture box is left out (not a negative).
    Datasets without their annotations give no rows.
    """
    readers = {"fracatlas": _fracatlas_boxes, "grazpedwri": _grazpedwri_boxes}
    rows: list[tuple[object, ...]] = []
    for name, entries in list_external(external_dir).items():
        rows += readers[name](Path(external_dir) / EXTERNAL_DATASETS[name], entries)
    return pd.DataFrame(rows, columns=list(BOX_COLUMNS))

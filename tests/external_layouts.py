"""FracAtlas and GRAZPEDWRI-DX phantoms in the datasets' real layouts (nothing downloaded): for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def _image(path: Path, value: int, suffix_mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((40, 32), value, np.uint8)
    pixels[5:15, 5:25] = 255 - value  # something to decode that is not flat
    Image.fromarray(pixels, suffix_mode).save(path)


def write_fracatlas(root: Path) -> Path:
    """FracAtlas's layout: dataset.csv + images/{Fractured,Non_fractured}/IMG*.jpg; a leg, a hip and a mixed image too."""
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
    return folder


def write_grazpedwri(root: Path) -> Path:
    """GRAZPEDWRI-DX's layout: dataset.csv (fracture_visible 1 or empty) + PNGs unzipped from images_part1/2."""
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
    return folder

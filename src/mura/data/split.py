"""Patient-level train/valid/test split (pure functions, and the ``split`` stage around them).

MURA's official ``valid`` stays ``valid``. MURA ``train`` is divided into
``train`` and a held-out ``test`` of ``split.test_fraction`` of its images,
grouped by patient (no patient in two splits) and stratified by body part
and label. The fracture dataset keeps its own split (``val`` becomes ``valid``).
Radiologist-labelled feedback images are always ``train``: the test set never changes under them.
The external test sets (FracAtlas, GRAZPEDWRI-DX) are the ``external`` split, evaluated apart.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.config import SplitParams
from mura.data.external import EXTERNAL_DATASETS, EXTERNAL_SPLIT
from mura.data.sources import FEEDBACK_DATASET
from mura.errors import DataError
from mura.stage import Layout, write_csv, write_json

FRACTURE_SPLIT_NAMES = {"train": "train", "val": "valid", "test": "test"}
SPLITS = ("train", "valid", "test", EXTERNAL_SPLIT)


def assign_test_patients(images: pd.DataFrame, test_fraction: float, seed: int) -> set[str]:
    """Choose the patients held out as ``test``, stratified by body part × label.

    Each patient is assigned to the stratum where most of its images are; in
    each stratum patients are shuffled with ``seed`` and taken until their
    images reach ``test_fraction`` of the stratum's images (a patient is taken
    only if that brings the count closer to the target).

    Args:
        images: rows with ``patient_id``, ``body_part`` and ``label``.
        test_fraction: share of images to hold out, in [0, 1).
        seed: shuffling seed.

    Returns:
        The held-out patient ids.

    Raises:
        ValueError: ``test_fraction`` is outside [0, 1) or a column is missing.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    missing = {"patient_id", "body_part", "label"} - set(images.columns)
    if missing:
        raise ValueError(f"images is missing columns {sorted(missing)}")
    if images.empty or test_fraction == 0.0:
        return set()
    strata = images["body_part"].astype(str) + "|" + images["label"].astype(str)
    counts = pd.crosstab(images["patient_id"], strata)
    primary = counts.idxmax(axis=1)  # ties resolve to the first stratum in sorted order
    sizes = counts.sum(axis=1)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for stratum in sorted(primary.unique()):
        patients = sorted(primary.index[primary == stratum])
        order = rng.permutation(len(patients))
        target = test_fraction * float(sizes[patients].sum())
        taken = 0.0
        for i in order:
            n = float(sizes[patients[i]])
            if abs(taken + n - target) < abs(taken - target):
                chosen.add(patients[i])
                taken += n
    return chosen


def make_split(images: pd.DataFrame, test_fraction: float, seed: int) -> pd.DataFrame:
    """Assign every image to ``train``, ``valid`` or ``test``.

    Args:
        images: the ingest listing (``image_id, dataset, source_split, patient_id, body_part, label``).
        test_fraction: share of MURA train images held out as test.
        seed: shuffling seed.

    Returns:
        DataFrame ``image_id, split`` in the order of ``images``.

    Raises:
        DataError: an unknown dataset or source split.
    """
    split = pd.Series(index=images.index, dtype=object)
    mura = images["dataset"] == "mura"
    fracture = images["dataset"] == "fracture"
    feedback = images["dataset"] == FEEDBACK_DATASET
    external = images["dataset"].isin(list(EXTERNAL_DATASETS))
    unknown = images.loc[~(mura | fracture | feedback | external), "dataset"].unique()
    if len(unknown):
        raise DataError(f"images.csv: unknown dataset {unknown[0]!r} (expected mura, fracture, feedback or an external set)")
    mura_train = mura & (images["source_split"] == "train")
    test_patients = assign_test_patients(images[mura_train], test_fraction, seed)
    split[mura_train] = np.where(images.loc[mura_train, "patient_id"].isin(test_patients), "test", "train")
    split[mura & (images["source_split"] == "valid")] = "valid"
    split[fracture] = images.loc[fracture, "source_split"].map(FRACTURE_SPLIT_NAMES)
    split[feedback] = "train"  # never valid or test: the frozen test set stays what it was
    split[external] = EXTERNAL_SPLIT  # FracAtlas, GRAZPEDWRI-DX: only ever tested on
    if split.isna().any():
        bad = images.loc[split.isna()].iloc[0]
        raise DataError(f"images.csv: {bad['image_id']} has unknown source split {bad['source_split']!r}")
    return pd.DataFrame({"image_id": images["image_id"].to_numpy(), "split": split.to_numpy()})


def count_split(images: pd.DataFrame, split: pd.DataFrame) -> dict[str, Any]:
    """Counts per split × dataset × body part × label, for reports/split.json.

    Args:
        images: the ingest listing.
        split: output of :func:`make_split`.

    Returns:
        Nested dict ``{split: {dataset: {body_part: {"normal": n, "abnormal": n}}}}``
        plus ``"totals": {split: n}`` and ``"patients": {split: n}``.
    """
    merged = images.merge(split, on="image_id")
    counts: dict[str, Any] = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    grouped = merged.groupby(["split", "dataset", "body_part", "label"]).size()
    for (s, d, b, lab), n in grouped.items():
        counts[s][d][b]["abnormal" if int(lab) == 1 else "normal"] = int(n)
    out: dict[str, Any] = {
        s: {d: {b: dict(v) for b, v in ds.items()} for d, ds in counts[s].items()} for s in SPLITS if s in counts
    }
    shown = [s for s in SPLITS if s != EXTERNAL_SPLIT or s in counts]  # the external split only when there is one
    out["totals"] = {s: int((merged["split"] == s).sum()) for s in shown}
    out["patients"] = {s: int(merged.loc[merged["split"] == s, "patient_id"].nunique()) for s in shown}
    return out


@dataclass(frozen=True)
class SplitPaths:
    """What the ``split`` stage reads and writes (defaults: the standard layout).

    Attributes:
        images: the ingest listing.
        split: ``split.csv`` (image_id, split).
        report: the counts per split, body part and label.
    """

    images: Path = Layout.IMAGES
    split: Path = Layout.SPLIT
    report: Path = Path("reports/split.json")


def run_split(params: SplitParams, seed: int, paths: SplitPaths) -> dict[str, Any]:
    """The ``split`` stage: read the ingest listing, split by patient, write ``split.csv`` and the counts.

    Returns:
        The counts written to ``paths.report``.

    Raises:
        DataError: the listing cannot be read.
    """

    try:
        images = pd.read_csv(paths.images, dtype={"patient_id": str, "study_id": str})
    except (FileNotFoundError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{paths.images}: cannot read the ingest listing ({exc})") from None
    split = make_split(images, params.test_fraction, seed)
    counts = count_split(images, split)
    write_csv(paths.split, split)
    write_json(paths.report, counts)
    return counts

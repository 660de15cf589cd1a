"""``mura feedback export``: radiologists' labels as a dataset the pipeline ingests.

Each export is one folder in MURA's own layout, train split only, so ``ingest`` reads it with
MURA's loader (:func:`mura.data.sources.list_feedback`) and ``split`` puts every image in train:

    <out>/export-<UTC time>/train/XR_<PART>/patient<pseudonym>/study1_<positive|negative>/image<k>.png
    <out>/export-<UTC time>/train_labeled_studies.csv, train_image_paths.csv   (MURA's CSV files)
    <out>/export-<UTC time>/provenance.csv   (per image: answer, source, assessment, model version and label, region)

What it includes, and why: every reviewed study whose views were kept, **confirmations and
disagreements alike**, labelled with the radiologist's label (the latest review of a study
counts). Disagreements alone would teach the next model only the cases the current one gets
wrong — a sample biased towards the current model's blind spots, with the wrong class balance.
Confirmations are still not a random sample of the clinic (reviewers choose what to review):
``provenance.csv`` keeps which rows came from feedback so their share and effect can be measured.

What it leaves out: studies without kept views (answered before feedback was on, views past
retention, a DICOM view with burned-in annotation), body parts outside MURA's seven, the
reviewers' names and their free-text reasons (they may hold identifiers). Images are 8-bit
PNG pixels without any header: no DICOM tag leaves the store. A study answered by a model
trained on synthetic data marks its export SYNTHETIC, like the phantoms.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mura.data.sources import BODY_PARTS, SYNTHETIC_MARKER
from mura.errors import DataError
from mura.operations.feedback import FeedbackStore

__all__ = ["ExportSummary", "export_feedback", "pseudonym"]

logger = logging.getLogger(__name__)

PROVENANCE_COLUMNS = [
    "path",
    "answer_id",
    "source",
    "assessment",
    "agreed",
    "model_name",
    "model_version",
    "model_label",
    "radiologist_label",
    "probability",
    "reviewed_at",
    "region_view",
    "region",
]


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote and what it left out (with why)."""

    folder: Path
    studies: int
    images: int
    confirmations: int
    disagreements: int
    skipped: dict[str, int]


def pseudonym(study_key: str) -> str:
    """MURA's ``patient<digits>`` from a study's keyed hash (pure; the hash is already not reversible)."""
    return f"patient{int(study_key[:12], 16) % 10**12:012d}"


def _select(reviewed: pd.DataFrame, store: FeedbackStore) -> tuple[pd.DataFrame, dict[str, int]]:
    """The reviews to export, and the count of each reason a reviewed study is left out."""
    in_scope = reviewed["body_part"].isin(BODY_PARTS)
    kept = reviewed["answer_id"].map(lambda a: bool(store.images_of(a)))
    skipped = {
        "body part outside MURA's seven": int((~in_scope).sum()),
        "no kept views": int((in_scope & ~kept).sum()),
    }
    return reviewed[in_scope & kept].reset_index(drop=True), skipped


def export_feedback(
    store: FeedbackStore, out_dir: Path, since: dt.datetime | None = None, name: str | None = None
) -> ExportSummary:
    """Write the reviewed studies as one export folder under ``out_dir`` (see the module's docstring).

    Args:
        store: the feedback store.
        out_dir: ``data.feedback_dir`` (``data/feedback``).
        since: only reviews at or after this time (all when None).
        name: the export folder's name (default ``export-<UTC time>``).

    Returns:
        What was written and what was left out.

    Raises:
        DataError: nothing to export, or the folder exists already.
    """
    reviewed, skipped = _select(store.reviewed(since=since), store)
    if reviewed.empty:
        raise DataError(f"no reviewed study with kept views to export ({', '.join(f'{k}: {v}' for k, v in skipped.items())})")
    name = name or "export-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out_dir) / name
    if folder.exists():
        raise DataError(f"{folder} exists already: exports are never overwritten (give another --name)")
    tmp = folder.with_name(f".{name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    studies, images, provenance = [], [], []
    for row in reviewed.to_dict("records"):
        verdict = "positive" if row["radiologist_label"] == "abnormal" else "negative"
        study = f"{name}/train/{row['body_part']}/{pseudonym(row['study_key'])}/study1_{verdict}"
        (tmp / study.split("/", 1)[1]).mkdir(parents=True, exist_ok=True)
        studies.append((f"{study}/", 1 if verdict == "positive" else 0))
        for k, view in enumerate(store.images_of(row["answer_id"]), 1):
            path = f"{study}/image{k}.png"
            shutil.copyfile(view, tmp / path.split("/", 1)[1])
            images.append(path)
            provenance.append(_provenance(path, row))
    _write_rows(tmp / "train_labeled_studies.csv", [[p, str(label)] for p, label in studies])
    _write_rows(tmp / "train_image_paths.csv", [[p] for p in images])
    pd.DataFrame(provenance, columns=PROVENANCE_COLUMNS).to_csv(tmp / "provenance.csv", index=False)
    if reviewed["synthetic_model"].astype(bool).any():
        (tmp / SYNTHETIC_MARKER).write_text("Reviews of answers by a model trained on SYNTHETIC phantoms: no clinical data.\n")
    tmp.rename(folder)  # a half-written export is never seen by ingest
    agreed = int(reviewed["agreed"].sum())
    summary = ExportSummary(folder, len(studies), len(images), agreed, len(reviewed) - agreed, skipped)
    logger.info("exported %d studies (%d images) to %s", summary.studies, summary.images, folder)
    return summary


def _provenance(path: str, row: dict[str, Any]) -> dict[str, Any]:
    """One image's provenance line (no reviewer name, no free text)."""
    return {column: row.get(column) for column in PROVENANCE_COLUMNS} | {
        "path": path,
        "model_label": row["label"],
        "probability": round(float(row["probability"]), 6),
        "reviewed_at": pd.Timestamp(row["reviewed_at"]).isoformat(),
    }


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)

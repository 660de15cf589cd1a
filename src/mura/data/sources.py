"""Reading the two datasets' on-disk layouts into image listings.

MURA-v1.1 (the CSV files are the source of truth)::

    MURA-v1.1/
      train_image_paths.csv      # no header: MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png
      train_labeled_studies.csv  # no header: MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1
      valid_image_paths.csv
      valid_labeled_studies.csv
      train/XR_*/patientNNNNN/studyN_{positive,negative}/imageN.png
      valid/...

Bone Fracture Multi-Region X-ray (Kaggle), note the double nesting and the space::

    Bone_Fracture_Binary_Classification/
      Bone_Fracture_Binary_Classification/
        {train,val,test}/{fractured,not fractured}/*.{jpg,png}

The functions here only parse paths and list files; decoding is in
:mod:`mura.data.imaging` and the orchestration in :mod:`mura.data.ingest`.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from mura.errors import DataError

# The seven upper-extremity regions of MURA, as its folders name them: the one definition.
BODY_PARTS = ("XR_ELBOW", "XR_FINGER", "XR_FOREARM", "XR_HAND", "XR_HUMERUS", "XR_SHOULDER", "XR_WRIST")
FRACTURE_BODY_PART = "MULTI_REGION"
FRACTURE_LABEL_DIRS = {"fractured": 1, "not fractured": 0}
FRACTURE_SPLITS = ("train", "val", "test")
MURA_SPLITS = ("train", "valid")
FEEDBACK_DATASET = "feedback"  # `mura feedback export`'s folders: MURA's layout, train split only, always trained on
FEEDBACK_STUDIES_CSV = "train_labeled_studies.csv"
SYNTHETIC_MARKER = "SYNTHETIC_DATA_README.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

MURA_LAYOUT = "MURA-v1.1/{train,valid}/XR_<PART>/patient<NNNNN>/study<N>_{positive,negative}/image<N>.png"
FRACTURE_LAYOUT = (
    "Bone_Fracture_Binary_Classification/Bone_Fracture_Binary_Classification/{train,val,test}/{fractured,not fractured}/*.jpg|png"
)

_MURA_PATH = re.compile(
    r"^(?P<root>[^/]+)/(?P<split>train|valid)/(?P<part>XR_[A-Z]+)/(?P<patient>patient\d+)/"
    r"(?P<study>study\d+)_(?P<verdict>positive|negative)(?:/(?P<file>[^/]+))?/?$"
)


@dataclass(frozen=True)
class ImageEntry:
    """One image as listed by a dataset, before decoding."""

    dataset: str
    source_split: str
    body_part: str
    patient_id: str
    study_id: str
    label: int
    path: str  # as listed in the source (CSV line or path relative to the dataset root)
    file: Path  # where it is on disk

    @property
    def image_id(self) -> str:
        """Stable identifier: dataset and listed path."""
        return f"{self.dataset}:{self.path}"


@dataclass(frozen=True)
class MuraPath:
    """The parts of a MURA image or study path."""

    split: str
    body_part: str
    patient_id: str
    study_id: str
    label: int


def parse_mura_path(path: str) -> MuraPath:
    """Parse a MURA image or study path as written in the CSV files.

    Args:
        path: e.g. ``MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png``
            or the study folder with a trailing slash.

    Returns:
        The split, body part, patient id, study id and folder label.

    Raises:
        DataError: the path does not follow the MURA layout.
    """
    match = _MURA_PATH.match(path.strip())
    if not match or match["part"] not in BODY_PARTS:
        raise DataError(f"cannot parse MURA path {path!r}; expected {MURA_LAYOUT}")
    study_dir = f"{match['root']}/{match['split']}/{match['part']}/{match['patient']}/{match['study']}_{match['verdict']}"
    return MuraPath(
        split=match["split"],
        body_part=match["part"],
        patient_id=match["patient"],
        study_id=study_dir,
        label=1 if match["verdict"] == "positive" else 0,
    )


def normalize_body_part(value: str | None) -> str | None:
    """``WRIST`` / ``wrist`` / ``XR_WRIST`` / DICOM ``BodyPartExamined`` → ``XR_WRIST``.

    Unknown parts pass through upper-cased with the ``XR_`` prefix; empty → None.
    """
    if not value or not value.strip():
        return None
    upper = value.strip().upper().replace(" ", "_")
    return upper if upper.startswith("XR_") else f"XR_{upper}"


def parse_label(text: str, where: str) -> int:
    """Parse a 0/1 label cell; ``where`` names the file and line for the error."""
    value = text.strip()
    if value not in ("0", "1"):
        raise DataError(f"{where}: label {value!r} is not 0 or 1")
    return int(value)


def _read_csv_rows(path: Path, ncols: int) -> list[list[str]]:
    """Read a header-less CSV file, checking it is non-empty and has ``ncols`` columns."""
    if not path.is_file():
        raise DataError(
            f"missing {path}; expected layout {MURA_LAYOUT} with the *_image_paths.csv and *_labeled_studies.csv files"
        )
    with path.open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path} is empty; expected one {'path' if ncols == 1 else 'path,label'} per line, no header")
    for number, row in enumerate(rows, 1):
        if len(row) != ncols:
            raise DataError(f"{path}:{number}: expected {ncols} column(s), got {len(row)} ({','.join(row)!r})")
    return rows


def find_mura_root(mura_dir: Path) -> Path:
    """Accept either the ``MURA-v1.1`` folder itself or its parent."""
    if (mura_dir / "MURA-v1.1").is_dir():
        return mura_dir / "MURA-v1.1"
    return mura_dir


def list_mura(mura_dir: Path) -> list[ImageEntry]:
    """List MURA-v1.1 images from its CSV files.

    The labeled-studies CSV gives the label; the study folder name must agree.

    Args:
        mura_dir: the ``MURA-v1.1`` folder (or its parent).

    Returns:
        Entries in CSV order, train before valid.

    Raises:
        DataError: a CSV is missing, empty or malformed, a path does not parse,
            or a study's CSV label contradicts its folder name.
    """
    return _list_mura_layout(find_mura_root(Path(mura_dir)), "mura", MURA_SPLITS)


def list_feedback(feedback_dir: Path) -> list[ImageEntry]:
    """List the radiologist-labelled exports under ``feedback_dir`` (each a folder in MURA's layout, train only).

    ``mura feedback export`` writes them; any sub-folder holding a ``train_labeled_studies.csv`` is
    one. Their patients are pseudonyms, prefixed by the export's name so two exports never share one.

    Raises:
        DataError: an export's CSV files are malformed (as for MURA).
    """
    entries: list[ImageEntry] = []
    for export in sorted(p.parent for p in Path(feedback_dir).glob(f"*/{FEEDBACK_STUDIES_CSV}")):
        for entry in _list_mura_layout(export, FEEDBACK_DATASET, ("train",)):
            patient = f"{FEEDBACK_DATASET}:{export.name}/{entry.patient_id}"
            entries.append(dataclasses.replace(entry, patient_id=patient))
    return entries


def _list_mura_layout(root: Path, dataset: str, splits: tuple[str, ...]) -> list[ImageEntry]:
    """Images of a folder in MURA's layout (``root`` holds ``<split>_{labeled_studies,image_paths}.csv``)."""
    base = root.parent  # CSV paths start with the root folder's name ("MURA-v1.1/")
    entries: list[ImageEntry] = []
    for split in splits:
        studies_csv = root / f"{split}_labeled_studies.csv"
        labels: dict[str, int] = {}
        for number, (study_path, label_text) in enumerate(_read_csv_rows(studies_csv, 2), 1):
            where = f"{studies_csv}:{number}"
            try:
                parsed = parse_mura_path(study_path)
            except DataError as exc:
                raise DataError(f"{where}: {exc}") from None
            label = parse_label(label_text, where)
            if label != parsed.label:
                raise DataError(f"{where}: label {label} contradicts study folder {study_path!r}")
            labels[parsed.study_id] = label
        paths_csv = root / f"{split}_image_paths.csv"
        for number, (image_path,) in enumerate(_read_csv_rows(paths_csv, 1), 1):
            image_path = image_path.strip()
            try:
                parsed = parse_mura_path(image_path)
            except DataError as exc:
                raise DataError(f"{paths_csv}:{number}: {exc}") from None
            if parsed.split != split:
                raise DataError(f"{paths_csv}:{number}: path {image_path!r} is not in the {split} split")
            label = labels.get(parsed.study_id, parsed.label)
            entries.append(
                ImageEntry(
                    dataset=dataset,
                    source_split=split,
                    body_part=parsed.body_part,
                    patient_id=parsed.patient_id,
                    study_id=parsed.study_id,
                    label=label,
                    path=image_path,
                    file=base / image_path,
                )
            )
    return entries


def is_junk(name: str) -> bool:
    """macOS and editor litter that is never an image (``._*``, ``.DS_Store``, dotfiles)."""
    return name.startswith(".") or name == "Thumbs.db"


def find_fracture_root(fracture_dir: Path) -> Path:
    """Descend the doubled ``Bone_Fracture_Binary_Classification`` folder if present."""
    root = Path(fracture_dir)
    inner = root / "Bone_Fracture_Binary_Classification"
    return inner if inner.is_dir() else root


def list_fracture(fracture_dir: Path) -> list[ImageEntry]:
    """List the Bone Fracture Multi-Region images by walking the folder tree.

    The dataset has no patient ids: each image is its own patient and study.

    Args:
        fracture_dir: the outer ``Bone_Fracture_Binary_Classification`` folder.

    Returns:
        Entries sorted by split and path.

    Raises:
        DataError: a split folder is missing or holds an unknown label folder.
    """
    root = find_fracture_root(Path(fracture_dir))
    entries: list[ImageEntry] = []
    for split in FRACTURE_SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"missing folder {split_dir}; expected layout {FRACTURE_LAYOUT}")
        for label_dir in sorted(split_dir.iterdir()):
            if is_junk(label_dir.name):
                continue
            if not label_dir.is_dir() or label_dir.name not in FRACTURE_LABEL_DIRS:
                raise DataError(f"unknown label folder {label_dir}; expected 'fractured' or 'not fractured' ({FRACTURE_LAYOUT})")
            label = FRACTURE_LABEL_DIRS[label_dir.name]
            for file in sorted(label_dir.iterdir()):
                if is_junk(file.name) or not file.is_file():
                    continue
                rel = file.relative_to(root).as_posix()
                entries.append(
                    ImageEntry(
                        dataset="fracture",
                        source_split=split,
                        body_part=FRACTURE_BODY_PART,
                        patient_id=f"fracture:{rel}",
                        study_id=f"fracture:{rel}",
                        label=label,
                        path=rel,
                        file=file,
                    )
                )
    return entries


def is_synthetic(dataset_dir: Path) -> bool:
    """True when the dataset folder (or a parent up to two levels) carries the synthetic marker."""
    path = Path(dataset_dir).resolve()
    return any((p / SYNTHETIC_MARKER).is_file() for p in (path, *list(path.parents)[:2]))

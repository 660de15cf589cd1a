"""Synthetic radiograph studies written as DICOM (DX or CR), as an X-ray unit would send them.

The DICOM node, its tests and its benchmark need studies in the hospital's format:
each study is rendered with :func:`mura.data.synthetic.render_phantom` and written
with pydicom as Digital X-Ray (for presentation) or Computed Radiography images,
in one of several transfer syntaxes (uncompressed, deflated, RLE, JPEG 2000
lossless), with the patient, study, series and equipment modules filled so that
viewers and PACS file them like real studies.

THIS IS NOT PATIENT DATA: the patient name is ``SYNTHETIC^PHANTOM`` and the
images are procedurally rendered.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from mura.data.synthetic import render_phantom

__all__ = ["TRANSFER_SYNTAXES", "PhantomStudy", "phantom_dataset", "write_phantom_study"]

# Transfer syntaxes the phantoms are written in (all decoded by the web path's plugins).
TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "deflated": DeflatedExplicitVRLittleEndian,
    "rle": RLELossless,
    "j2k": JPEG2000Lossless,
}
SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage, "CT": CTImageStorage}


@dataclass(frozen=True)
class PhantomStudy:
    """One written study: its files and UIDs (the study UID is what the node groups by)."""

    study_uid: str
    files: tuple[Path, ...]
    abnormal: bool


def phantom_dataset(
    gray: np.ndarray,
    study_uid: str,
    series_uid: str,
    instance: int,
    body_part: str = "WRIST",
    modality: str = "DX",
    syntax: str = "explicit",
    patient_id: str = "PHANTOM-0001",
) -> Dataset:
    """A radiograph dataset holding ``gray`` (8-bit pixels stored as 12-bit MONOCHROME2).

    Long on purpose: the DICOM attributes of one instance, module by module, in the standard's order.

    Args:
        gray: 2-D uint8 image.
        study_uid, series_uid: the study and series it belongs to.
        instance: InstanceNumber.
        body_part: BodyPartExamined (DICOM terms: WRIST, HAND, ...).
        modality: ``DX``, ``CR`` or ``CT`` (a CT header on the same pixels: an out-of-scope object
            a node must refuse).
        syntax: a key of :data:`TRANSFER_SYNTAXES`.
        patient_id: PatientID.
    """
    now = datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = f"XR {body_part} (synthetic phantom)"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.Modality = modality
    ds.Manufacturer = "mura synthetic phantoms"
    ds.BodyPartExamined = body_part
    ds.InstanceNumber = instance
    ds.PatientOrientation = ["A", "F"]
    ds.ImageLaterality = "R"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "74670003", "SCT", "Wrist joint"
    ds.AnatomicRegionSequence = [region]
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LIN", 1
    ds.ViewPosition = "AP" if instance % 2 else "LL"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.BurnedInAnnotation = "NO"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PresentationLUTShape = "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    ds.KVP = 55
    ds.ImagerPixelSpacing = ds.PixelSpacing = [0.15, 0.15]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    data = np.asarray(gray, np.uint16) * 16
    ds.Rows, ds.Columns = data.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = data.tobytes()
    if modality == "CT":
        for keyword in ("PresentationIntentType", "DetectorType", "ImagerPixelSpacing", "PresentationLUTShape"):
            delattr(ds, keyword)
    uid = TRANSFER_SYNTAXES[syntax]
    if uid.is_compressed:
        ds.compress(uid, data, encoding_plugin="pylibjpeg" if uid == JPEG2000Lossless else "")
    meta.TransferSyntaxUID = uid
    return ds


def write_phantom_study(
    out_dir: Path,
    views: int = 3,
    body_part: str = "WRIST",
    abnormal: bool = False,
    seed: int = 0,
    modality: str = "DX",
    syntaxes: Sequence[str] = ("explicit",),
    size: int | None = None,
) -> PhantomStudy:
    """Render and write one study of ``views`` images (syntaxes cycle over the views).

    Args:
        out_dir: folder for the ``.dcm`` files (created).
        size: resize each phantom's long side to this many pixels (None: as rendered).

    Returns:
        The study's UID and files.
    """

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = []
    for k in range(views):
        gray = render_phantom(f"XR_{body_part}", abnormal, rng)
        if size is not None:
            scale = size / max(gray.shape)
            gray = np.asarray(Image.fromarray(gray).resize((round(gray.shape[1] * scale), round(gray.shape[0] * scale))))
        ds = phantom_dataset(gray, study_uid, series_uid, k + 1, body_part, modality, syntaxes[k % len(syntaxes)])
        path = out_dir / f"{ds.SOPInstanceUID}.dcm"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path.write_bytes(buffer.getvalue())
        files.append(path)
    return PhantomStudy(study_uid, tuple(files), abnormal)

"""Build small DICOM files for tests (pydicom), with identifying tags that must never leak."""

from __future__ import annotations

import io

import numpy as np

PATIENT_NAME = "Doe^Jane^SECRET"
PATIENT_ID = "PID-0042-SECRET"


def make_dicom(
    pixels: np.ndarray,
    monochrome1: bool = False,
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    with_pixels: bool = True,
    body_part: str = "WRIST",
) -> bytes:
    """A Secondary Capture DICOM file holding ``pixels`` (uint16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.BodyPartExamined = body_part
    ds.Modality = "CR"
    if with_pixels:
        data = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = data.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = data.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()

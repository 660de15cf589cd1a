"""DICOM decoding for serving and the web UI (pydicom).

Pixel data is decoded with pydicom; the modality LUT (rescale slope and
intercept) and the VOI LUT or window are applied, MONOCHROME1 is inverted,
and the result is scaled to 8 bits. Patient-identifying tags are never
returned or logged: only the pixels and the (non-identifying) body part leave
this module.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from mura.data.imaging import REASON_EMPTY, REASON_TOO_LARGE, REASON_UNDECODABLE, ImageDecodeError

REASON_NO_PIXELS = "no_pixel_data"


def is_dicom(data: bytes) -> bool:
    """True for DICOM Part-10 files (``DICM`` magic at byte 128)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomImage:
    """Decoded pixels and the non-identifying tags the UI may show."""

    gray: np.ndarray
    body_part: str | None


def decode_dicom(data: bytes, max_pixels: int) -> DicomImage:
    """Decode a DICOM file to 8-bit grayscale.

    Args:
        data: the file's bytes.
        max_pixels: refuse larger images.

    Returns:
        The grayscale image and the ``BodyPartExamined`` tag (upper case) if present.

    Raises:
        ImageDecodeError: not DICOM, no pixel data, or undecodable pixel data.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if not data:
        raise ImageDecodeError(REASON_EMPTY, "file is empty")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:  # pydicom raises many types for broken files
        raise ImageDecodeError(REASON_UNDECODABLE, "not a readable DICOM file") from None
    if "PixelData" not in ds:
        raise ImageDecodeError(REASON_NO_PIXELS, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > max_pixels:
        raise ImageDecodeError(REASON_TOO_LARGE, f"{cols}x{rows} exceeds {max_pixels} pixels")
    try:
        pixels = ds.pixel_array
    except Exception:
        raise ImageDecodeError(REASON_UNDECODABLE, "DICOM pixel data cannot be decoded") from None
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        pixels = pixels[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    elif pixels.ndim == 3:  # multi-frame: first frame
        pixels = pixels[0]
    values = apply_modality_lut(pixels, ds)
    values = apply_voi_lut(values, ds) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else values
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    gray = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    body_part = ds.get("BodyPartExamined")
    return DicomImage(gray=gray, body_part=str(body_part).upper() if body_part else None)

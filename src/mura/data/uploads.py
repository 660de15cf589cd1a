"""Uploaded images (served model, Python API, CLI, web UI): type by content, then model pixels.

The type of an upload is read from its bytes, never from its name; PNG, JPEG
and DICOM are accepted. One implementation for every entry point, so an upload
is decoded and resized exactly as the training cache was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mura.config import ResizePolicy
from mura.data.dicom import decode_dicom, is_dicom
from mura.data.imaging import ImageDecodeError, decode_image, resize_gray

__all__ = ["DecodedUpload", "ImageDecodeError", "decode_upload", "sniff_kind"]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_kind(data: bytes) -> str | None:
    """File type from content: ``png``, ``jpeg``, ``dicom`` or None (extensions are ignored)."""
    if data[:8] == PNG_MAGIC:
        return "png"
    if data[:3] == JPEG_MAGIC:
        return "jpeg"
    if is_dicom(data):
        return "dicom"
    return None


@dataclass(frozen=True)
class DecodedUpload:
    """An uploaded image ready for the model, with its non-identifying metadata."""

    pixels: np.ndarray  # (S, S) uint8
    gray: np.ndarray  # full-resolution 8-bit grayscale (for overlays)
    kind: str  # png | jpeg | dicom | image (another format PIL reads)
    body_part: str | None
    modality: str | None = None
    warnings: tuple[str, ...] = ()  # why the answer may not apply (DICOM tags only: PNG/JPEG carry none)
    bits_stored: int | None = None  # the source's bit depth (DICOM BitsStored; 8 or 16 for PNG/JPEG)
    photometric: str | None = None  # DICOM PhotometricInterpretation, or the PNG/JPEG mode
    manufacturer_model: str | None = None  # DICOM ManufacturerModelName (the X-ray unit's model)
    burned_in_annotation: bool = False  # DICOM BurnedInAnnotation YES: text in the pixels (never kept for feedback)


def decode_upload(data: bytes, image_size: int, policy: ResizePolicy, max_pixels: int) -> DecodedUpload:
    """Decode PNG, JPEG or DICOM bytes (type detected from content, not name) to model pixels.

    Args:
        data: the uploaded bytes.
        image_size: model input side.
        policy: resize policy of the training cache.
        max_pixels: refuse larger images (the served model's ``max_pixels``).

    Returns:
        The decoded upload.

    Raises:
        ImageDecodeError: empty, truncated, undecodable, too large or a DICOM without pixels.
    """
    kind = sniff_kind(data)
    if kind == "dicom":
        dicom = decode_dicom(data, max_pixels=max_pixels)
        pixels = resize_gray(dicom.gray, image_size, policy)
        return DecodedUpload(
            pixels,
            dicom.gray,
            "dicom",
            dicom.body_part,
            dicom.modality,
            dicom.warnings,
            dicom.bits_stored,
            dicom.photometric,
            dicom.manufacturer_model,
            dicom.burned_in_annotation,
        )
    gray, mode = decode_image(data, max_pixels=max_pixels)
    bits = 16 if "16" in mode or mode in ("I", "F") else 8
    return DecodedUpload(resize_gray(gray, image_size, policy), gray, kind or "image", None, bits_stored=bits, photometric=mode)

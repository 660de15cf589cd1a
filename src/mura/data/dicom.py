"""DICOM decoding for serving and the web UI (pydicom and its codec plugins).

Pixel data is decoded by pydicom's pixel-data plugins: uncompressed (little and
big endian, deflated), RLE, JPEG baseline/extended (8 and 12 bit) and lossless
(process 14, SV1), JPEG-LS lossless and near-lossless (``pylibjpeg-libjpeg``)
and JPEG 2000 (``pylibjpeg-openjpeg``). The modality LUT (rescale slope and
intercept) and the VOI LUT or window are applied, MONOCHROME1 is inverted,
colour images (RGB, YBR, palette) become luminance, a multi-frame image
contributes its first frame, and the result is scaled to 8 bits.

Scope: the model was trained on radiographs of seven upper-extremity regions.
A file whose ``Modality`` is not a radiograph, or whose ``BodyPartExamined`` is
another region, is still scored but carries a warning saying why the answer
may not apply. Nothing identifying leaves this module: only the pixels, the
modality and the body part (and warnings built from those two).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mura.data.imaging import REASON_EMPTY, REASON_TOO_LARGE, REASON_UNDECODABLE, ImageDecodeError
from mura.data.sources import BODY_PARTS

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "REASON_NO_PIXELS",
    "REASON_UNSUPPORTED_SYNTAX",
    "DicomImage",
    "decode_dicom",
    "is_dicom",
    "scope_warnings",
]

REASON_NO_PIXELS = "no_pixel_data"
REASON_UNSUPPORTED_SYNTAX = "unsupported_transfer_syntax"

# Projection radiography: computed and digital radiography, film (RG), fluoroscopy (RF).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "RF"})
# Secondary capture / other: often a digitised film; nothing to say either way.
NEUTRAL_MODALITIES = frozenset({"OT", "SC"})
# DICOM BodyPartExamined terms (PS3.16 CID 4031) and common spellings → MURA's regions.
BODY_PART_TERMS = {
    **{part.removeprefix("XR_"): part for part in BODY_PARTS},
    "ARM": "XR_HUMERUS",
    "UPPERARM": "XR_HUMERUS",
    "UPPER ARM": "XR_HUMERUS",
    "THUMB": "XR_FINGER",
    "FINGERS": "XR_FINGER",
    "HANDS": "XR_HAND",
    "WRISTS": "XR_WRIST",
}
# Terms that cover the seven regions without naming one: not out of scope.
UPPER_EXTREMITY_TERMS = frozenset({"UPPEREXTREMITY", "UPPER EXTREMITY", "EXTREMITY", "ARM_UPPER"})


def is_dicom(data: bytes) -> bool:
    """True for DICOM Part-10 files (``DICM`` magic at byte 128)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomImage:
    """Decoded pixels and the non-identifying tags the UI may show.

    Attributes:
        gray: 8-bit grayscale image.
        body_part: ``BodyPartExamined`` mapped to MURA's ``XR_<PART>`` when it names one of the
            seven regions, else the tag upper-cased; None when absent.
        modality: the ``Modality`` tag (upper case) or None.
        warnings: why the model's answer may not apply to this image (empty when in scope).
        bits_stored: ``BitsStored`` (acquisition, not identity: for drift monitoring).
        photometric: ``PhotometricInterpretation``.
        manufacturer_model: ``ManufacturerModelName`` (the X-ray unit's model, not the site or patient).
        burned_in_annotation: ``BurnedInAnnotation`` is YES (identifying text may be in the pixels).
    """

    gray: np.ndarray
    body_part: str | None
    modality: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    bits_stored: int | None = None
    photometric: str | None = None
    manufacturer_model: str | None = None
    burned_in_annotation: bool = False


def scope_warnings(modality: str | None, body_part: str | None) -> tuple[str, ...]:
    """Warnings for an image outside the model's scope (pure; built from the two tags only).

    Args:
        modality: the ``Modality`` tag (any case) or None.
        body_part: the raw ``BodyPartExamined`` tag or None.

    Returns:
        Zero, one or two sentences.
    """
    out = []
    mod = (modality or "").strip().upper()
    if mod and mod not in RADIOGRAPH_MODALITIES | NEUTRAL_MODALITIES:
        out.append(f"modality {mod} is not a radiograph: the model was trained on radiographs only")
    part = (body_part or "").strip().upper()
    if part and part not in UPPER_EXTREMITY_TERMS and _region(part) is None:
        regions = ", ".join(p.removeprefix("XR_").lower() for p in BODY_PARTS)
        out.append(f"body part {part} is outside the seven upper-extremity regions the model was trained on ({regions})")
    return tuple(out)


def _region(term: str) -> str | None:
    key = term.strip().upper().replace("_", " ")
    for candidate in (key, key.replace(" ", ""), term.strip().upper()):
        if candidate in BODY_PART_TERMS:
            return BODY_PART_TERMS[candidate]
        if candidate.startswith("XR ") or candidate.startswith("XR_"):
            named = "XR_" + candidate[3:].replace(" ", "_")
            if named in BODY_PARTS:
                return named
    return None


def _syntax_name(ds: Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        return "unknown transfer syntax"
    return f"{uid} ({uid.name})" if uid.name and uid.name != str(uid) else str(uid)


def _first_frame(ds: Dataset) -> np.ndarray:
    """Decode only the first frame of the pixel data (all of it for single-frame images)."""

    from pydicom.pixels import pixel_array  # loaded by decode_dicom already

    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    return np.asarray(pixel_array(ds, index=0) if frames > 1 else pixel_array(ds))


def _to_luminance(pixels: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Colour → luminance; grayscale passes through. pydicom already returns RGB for YBR data."""
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut  # loaded by decode_dicom already

        pixels = np.asarray(apply_color_lut(pixels, ds))
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        weights = np.array([0.299, 0.587, 0.114])
        return np.asarray(pixels[..., :3].astype(np.float64) @ weights)
    if pixels.ndim != 2:
        raise ImageDecodeError(REASON_UNDECODABLE, f"unexpected pixel array shape {pixels.shape}")
    return pixels


def decode_dicom(data: bytes, max_pixels: int) -> DicomImage:
    """Decode a DICOM file to 8-bit grayscale.

    Args:
        data: the file's bytes.
        max_pixels: refuse larger images.

    Returns:
        The grayscale image, its body part and modality, and scope warnings.

    Raises:
        ImageDecodeError: not DICOM, no pixel data, an undecodable or unsupported transfer
            syntax (the message names its UID and name), or too large.
    """

    if not data:
        raise ImageDecodeError(REASON_EMPTY, "file is empty")
    # lazy: pydicom and its pixel plugins take ~0.2 s to import, paid only when a DICOM file comes
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:  # pydicom raises many types for broken files
        raise ImageDecodeError(REASON_UNDECODABLE, "not a readable DICOM file") from None
    if "PixelData" not in ds:
        raise ImageDecodeError(REASON_NO_PIXELS, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * cols > max_pixels:
        raise ImageDecodeError(REASON_TOO_LARGE, f"{cols}x{rows} exceeds {max_pixels} pixels")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:  # missing: infer from the samples, as most readers do
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
    try:
        pixels = _first_frame(ds)
    except NotImplementedError:
        raise ImageDecodeError(REASON_UNSUPPORTED_SYNTAX, f"transfer syntax {_syntax_name(ds)} is not supported") from None
    except Exception:  # a decoder plugin failed on this data: corrupt or truncated pixel data
        raise ImageDecodeError(
            REASON_UNDECODABLE, f"pixel data in transfer syntax {_syntax_name(ds)} cannot be decoded (corrupt or truncated)"
        ) from None
    gray = _to_luminance(pixels, ds, photometric)
    if samples == 1 and photometric not in ("PALETTE COLOR",):
        values = apply_modality_lut(gray, ds)
        values = apply_voi_lut(values, ds) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else values
    else:
        values = gray
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        scaled = 1.0 - scaled
    out = np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)
    raw_part = str(ds.get("BodyPartExamined", "") or "").strip() or None
    modality = str(ds.get("Modality", "") or "").strip().upper() or None
    body_part = (_region(raw_part) or raw_part.upper()) if raw_part else None
    bits = int(ds.get("BitsStored", 0) or 0) or None
    device = str(ds.get("ManufacturerModelName", "") or "").strip()[:64] or None
    burned_in = str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES"
    return DicomImage(
        gray=out,
        body_part=body_part,
        modality=modality,
        warnings=scope_warnings(modality, raw_part),
        bits_stored=bits,
        photometric=photometric,
        manufacturer_model=device,
        burned_in_annotation=burned_in,
    )

"""Uploads: type by content (never by name), decoded like the training cache."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mura.data.imaging import ImageDecodeError, resize_gray
from mura.data.uploads import decode_upload, sniff_kind
from tests.dicom_utils import make_dicom

GRADIENT = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (40, 1))


def _encode(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(GRADIENT).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data,kind",
    [
        (_encode("PNG"), "png"),
        (_encode("JPEG"), "jpeg"),
        (make_dicom(GRADIENT.astype(np.uint16)), "dicom"),
        (b"GIF89a....", None),
        (b"", None),
        (b"\x00" * 200, None),
    ],
)
def test_sniff_kind(data: bytes, kind: str | None) -> None:
    assert sniff_kind(data) == kind


def test_png_upload_is_resized_like_the_cache() -> None:
    upload = decode_upload(_encode("PNG"), 16, "pad", 10**6)
    assert upload.kind == "png" and upload.body_part is None
    np.testing.assert_array_equal(upload.pixels, resize_gray(GRADIENT, 16, "pad"))
    np.testing.assert_array_equal(upload.gray, GRADIENT)


def test_pixel_limit_applies() -> None:
    with pytest.raises(ImageDecodeError, match="exceeds 100 pixels"):
        decode_upload(_encode("PNG"), 16, "stretch", 100)

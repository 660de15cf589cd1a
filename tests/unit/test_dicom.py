from __future__ import annotations

import logging

import numpy as np
import pytest

from mura.data.dicom import REASON_NO_PIXELS, decode_dicom, is_dicom
from mura.data.imaging import ImageDecodeError
from mura.data.uploads import decode_upload
from tests.dicom_utils import PATIENT_ID, PATIENT_NAME, make_dicom

RAMP = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (32, 1))


def test_monochrome2_ramp_keeps_contrast() -> None:
    image = decode_dicom(make_dicom(RAMP), max_pixels=10**7)
    assert image.gray[0, 0] == 0 and image.gray[0, -1] == 255
    assert np.all(np.diff(image.gray[0].astype(int)) >= 0)
    assert image.body_part == "WRIST"


def test_monochrome1_is_inverted() -> None:
    normal = decode_dicom(make_dicom(RAMP), max_pixels=10**7).gray
    inverted = decode_dicom(make_dicom(RAMP, monochrome1=True), max_pixels=10**7).gray
    np.testing.assert_array_equal(inverted, 255 - normal)


def test_window_is_applied() -> None:
    gray = decode_dicom(make_dicom(RAMP, window=(1024, 512)), max_pixels=10**7).gray
    # Values outside [768, 1280] saturate: most of the ramp is black or white.
    assert (gray[0] == 0).sum() > 5 and (gray[0] == 255).sum() > 30


def test_rescale_slope_and_intercept() -> None:
    gray = decode_dicom(make_dicom(RAMP, slope=2.0, intercept=-1000.0), max_pixels=10**7).gray
    assert gray.min() == 0 and gray.max() == 255


def test_no_pixel_data_and_garbage() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_dicom(make_dicom(RAMP, with_pixels=False), max_pixels=10**7)
    assert info.value.reason == REASON_NO_PIXELS
    with pytest.raises(ImageDecodeError):
        decode_dicom(b"\x00" * 128 + b"DICM" + b"\x01" * 20, max_pixels=10**7)


def test_upload_detects_dicom_by_content_and_never_logs_tags(caplog: pytest.LogCaptureFixture) -> None:
    data = make_dicom(RAMP)
    assert is_dicom(data) and not is_dicom(b"\x89PNG\r\n\x1a\n")
    with caplog.at_level(logging.DEBUG):
        upload = decode_upload(data, 16, "stretch", 10**7)
    assert upload.kind == "dicom" and upload.pixels.shape == (16, 16)
    assert PATIENT_NAME not in caplog.text and PATIENT_ID not in caplog.text
    assert PATIENT_NAME not in repr(upload) and PATIENT_ID not in repr(upload)

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest

from mura.data.dicom import REASON_NO_PIXELS, REASON_UNSUPPORTED_SYNTAX, decode_dicom, is_dicom, scope_warnings
from mura.data.imaging import ImageDecodeError
from mura.data.uploads import decode_upload
from tests.dicom_utils import PATIENT_ID, PATIENT_NAME, make_dicom

RAMP = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (32, 1))


def test_monochrome2_ramp_keeps_contrast() -> None:
    image = decode_dicom(make_dicom(RAMP), max_pixels=10**7)
    assert image.gray[0, 0] == 0 and image.gray[0, -1] == 255
    assert np.all(np.diff(image.gray[0].astype(int)) >= 0)
    assert image.body_part == "XR_WRIST" and image.modality == "CR" and image.warnings == ()


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


# The same MR image in every lossless encoding pydicom ships, plus JPEG lossless SV1 (tests/data).
TEST_DATA = Path(__file__).resolve().parents[1] / "data"
LOSSLESS = {
    "explicit VR little endian": "MR_small.dcm",
    "implicit VR little endian": "MR_small_implicit.dcm",
    "explicit VR big endian": "MR_small_bigendian.dcm",
    "RLE": "MR_small_RLE.dcm",
    "JPEG 2000 lossless": "MR_small_jp2klossless.dcm",
    "JPEG-LS lossless": "MR_small_jpeg_ls_lossless.dcm",
    "JPEG lossless SV1": str(TEST_DATA / "MR_small_jpeg_lossless_sv1.dcm"),
}
# Lossy or other encodings: they must decode (nothing to compare bit for bit).
OTHERS = {
    "JPEG baseline 8-bit (YBR)": ("SC_rgb_jpeg_dcmd.dcm", (256, 256)),
    "JPEG extended 12-bit": ("JPGExtended.dcm", (1024, 256)),
    "JPEG-LS near-lossless 8-bit": ("JPEGLSNearLossless_08.dcm", (45, 10)),
    "JPEG-LS near-lossless 16-bit": ("JPEGLSNearLossless_16.dcm", (50, 10)),
    "JPEG 2000 lossy": ("693_J2KI.dcm", (512, 512)),
    "deflated explicit VR": ("image_dfl.dcm", (512, 512)),
    "palette colour": ("examples_palette.dcm", (350, 800)),
}


def _read(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    return Path(name if name.startswith("/") else str(get_testdata_file(name))).read_bytes()


def test_every_lossless_encoding_decodes_to_the_same_pixels() -> None:
    reference = decode_dicom(_read(LOSSLESS["explicit VR little endian"]), max_pixels=10**7).gray
    assert reference.shape == (64, 64) and reference.std() > 10
    for encoding, name in LOSSLESS.items():
        np.testing.assert_array_equal(decode_dicom(_read(name), max_pixels=10**7).gray, reference, err_msg=encoding)


@pytest.mark.parametrize("encoding", sorted(OTHERS))
def test_other_encodings_decode(encoding: str) -> None:
    name, shape = OTHERS[encoding]
    image = decode_dicom(_read(name), max_pixels=10**7)
    assert image.gray.shape == shape and image.gray.dtype == np.uint8 and image.gray.max() > image.gray.min()


def test_multi_frame_uses_the_first_frame() -> None:
    import pydicom

    data = _read("SC_rgb_rle_2frame.dcm")
    frames = pydicom.dcmread(io.BytesIO(data)).pixel_array
    assert frames.shape[0] == 2 and not np.array_equal(frames[0], frames[1])
    gray = decode_dicom(data, max_pixels=10**7).gray
    first = frames[0].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    expected = np.rint((first - first.min()) / (first.max() - first.min()) * 255)
    np.testing.assert_array_equal(gray, expected.astype(np.uint8))


def test_missing_photometric_interpretation_is_inferred() -> None:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(make_dicom(RAMP)))
    del ds.PhotometricInterpretation
    buffer = io.BytesIO()
    ds.save_as(buffer)
    np.testing.assert_array_equal(
        decode_dicom(buffer.getvalue(), max_pixels=10**7).gray, decode_dicom(make_dicom(RAMP), 10**7).gray
    )


def test_unsupported_transfer_syntax_is_named() -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import UID

    ds = pydicom.dcmread(io.BytesIO(make_dicom(RAMP)))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(ImageDecodeError) as info:
        decode_dicom(buffer.getvalue(), max_pixels=10**7)
    assert info.value.reason == REASON_UNSUPPORTED_SYNTAX
    assert "1.2.840.10008.1.2.4.100 (MPEG2 Main Profile / Main Level)" in info.value.detail


def test_corrupt_compressed_pixels_name_the_syntax() -> None:
    with pytest.raises(ImageDecodeError, match=r"1.2.840.10008.1.2.4.51 \(JPEG Extended \(Process 2 and 4\)\)"):
        decode_dicom(_read("JPEG-lossy.dcm"), max_pixels=10**8)  # pydicom's deliberately broken JPEG


@pytest.mark.parametrize(
    "modality,body_part,expected",
    [
        ("CR", "WRIST", []),
        ("DX", "XR_HAND", []),
        ("dx", "thumb", []),
        ("SC", None, []),
        (None, "UPPER EXTREMITY", []),
        ("CT", "WRIST", ["modality CT is not a radiograph"]),
        ("MR", None, ["modality MR is not a radiograph"]),
        ("CR", "KNEE", ["body part KNEE is outside the seven upper-extremity regions"]),
        ("US", "CHEST", ["modality US", "body part CHEST"]),
    ],
)
def test_scope_warnings(modality: str | None, body_part: str | None, expected: list[str]) -> None:
    warnings = scope_warnings(modality, body_part)
    assert len(warnings) == len(expected)
    for warning, start in zip(warnings, expected, strict=True):
        assert warning.startswith(start)


def test_out_of_scope_dicom_is_flagged_without_identifying_tags() -> None:
    data = make_dicom(RAMP, body_part="KNEE")
    upload = decode_upload(data, 16, "stretch", 10**7)
    assert upload.body_part == "KNEE" and len(upload.warnings) == 1
    assert PATIENT_NAME not in " ".join(upload.warnings) and PATIENT_ID not in " ".join(upload.warnings)
    mr = decode_upload(_read("MR_small.dcm"), 16, "stretch", 10**7)
    assert mr.modality == "MR" and mr.warnings[0].startswith("modality MR")

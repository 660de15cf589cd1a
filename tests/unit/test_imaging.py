from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mura.data.imaging import (
    REASON_EMPTY,
    REASON_TOO_LARGE,
    REASON_TRUNCATED,
    REASON_UNDECODABLE,
    ImageDecodeError,
    box_to_grid,
    content_region,
    decode_image,
    dhash,
    heat_on_image,
    pixel_hash,
    prepare_image,
    resize_gray,
    to_gray8,
)

GRADIENT = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))  # 48 x 64, values 0..252


def _png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        lambda g: Image.fromarray(g),  # L
        lambda g: Image.fromarray(g).convert("RGB"),
        lambda g: Image.fromarray(g).convert("LA"),
        lambda g: Image.fromarray(g).convert("RGBA"),
        lambda g: Image.fromarray(g).convert("P"),
        lambda g: Image.fromarray(g.astype(np.uint16) * 16),  # 12-bit data in a 16-bit container
        lambda g: Image.fromarray(g.astype(np.uint16) * 257),  # full 16-bit range
    ],
    ids=["L", "RGB", "LA", "RGBA", "P", "I16-12bit", "I16-16bit"],
)
def test_every_mode_becomes_gray8_without_losing_contrast(make) -> None:
    gray, _mode = decode_image(_png(make(GRADIENT)), max_pixels=10**7)
    assert gray.dtype == np.uint8 and gray.shape == GRADIENT.shape
    # Contrast kept: full range, monotone, within a couple of levels of the source.
    assert np.abs(gray.astype(int) - GRADIENT.astype(int)).max() <= 3
    assert np.all(np.diff(gray[0].astype(int)) >= 0)


def test_alpha_composited_on_black() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255
    gray = to_gray8(Image.fromarray(rgba, "RGBA"))
    assert gray[:2].min() == 200 and gray[2:].max() == 0


def test_binary_and_float_modes() -> None:
    assert to_gray8(Image.fromarray(GRADIENT).convert("1")).max() == 255
    f = to_gray8(Image.fromarray(GRADIENT.astype(np.float32) / 252.0, "F"))
    assert f.max() == 255 and f.min() == 0


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", REASON_EMPTY),
        (b"not an image at all" * 5, REASON_UNDECODABLE),
        (_png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8)))[:3000], REASON_TRUNCATED),
    ],
    ids=["empty", "garbage", "truncated"],
)
def test_decode_errors_have_reasons(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=10**7)
    assert info.value.reason == reason


def test_decompression_bomb_refused() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_png(Image.new("L", (300, 300))), max_pixels=10_000)
    assert info.value.reason == REASON_TOO_LARGE


@pytest.mark.parametrize("policy", ["stretch", "pad"])
@pytest.mark.parametrize("shape", [(48, 64), (100, 30), (32, 32)])
def test_resize_shapes(policy: str, shape: tuple[int, int]) -> None:
    out = resize_gray(np.full(shape, 200, np.uint8), 40, policy)  # type: ignore[arg-type]
    assert out.shape == (40, 40) and out.dtype == np.uint8


def test_pad_keeps_aspect_ratio() -> None:
    out = resize_gray(np.full((20, 40), 255, np.uint8), 40, "pad")
    rows = np.flatnonzero(out.max(axis=1) > 0)
    assert rows.min() == 10 and rows.max() == 29  # 20 rows of content centred in 40
    assert out[:10].max() == 0


def test_resize_rejects_bad_policy() -> None:
    with pytest.raises(ValueError, match="resize policy"):
        resize_gray(GRADIENT, 10, "crop")  # type: ignore[arg-type]


def test_hashes() -> None:
    brighter = np.clip(GRADIENT.astype(int) + 5, 0, 255).astype(np.uint8)
    assert (dhash(GRADIENT) ^ dhash(brighter)).bit_count() == 0  # Hamming distance of the hashes
    assert (dhash(GRADIENT) ^ dhash(GRADIENT[:, ::-1].copy())).bit_count() > 20
    assert pixel_hash(GRADIENT) == pixel_hash(GRADIENT.copy())
    assert pixel_hash(GRADIENT) != pixel_hash(brighter)


def test_prepare_image_same_pixels_other_encoding() -> None:
    a = prepare_image(_png(Image.fromarray(GRADIENT)), 32, "stretch", 10**7)
    b = prepare_image(_png(Image.fromarray(GRADIENT).convert("RGB")), 32, "stretch", 10**7)
    assert a.sha256 != b.sha256 and a.pixel_hash == b.pixel_hash
    assert (a.width, a.height) == (64, 48) and a.pixels.shape == (32, 32)


def test_cache_rows_come_back_in_the_asked_order() -> None:
    from mura.data.imaging import cache_rows

    cache = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2)
    rows = np.array([3, 0, 3, 1])
    np.testing.assert_array_equal(cache_rows(cache, rows), cache[rows])


def test_content_region_and_heat_on_image_undo_pads_bands() -> None:
    image = np.zeros((200, 100), np.uint8)  # tall: pad puts black bands left and right
    image[120:160, 20:60] = 255  # a finding
    square = resize_gray(image, 64, "pad")
    assert content_region(image.shape, 64, "pad") == (16, 0, 48, 64)
    assert content_region(image.shape, 64, "stretch") == (0, 0, 64, 64)
    assert not square[:, :16].any() and not square[:, 48:].any()  # the bands are where the region says
    heat = square.astype(np.float32) / 255  # a map of the square, as Grad-CAM gives
    on_image = heat_on_image(heat, image.shape, "pad")
    assert on_image.shape == (64, 32)  # the image's aspect ratio: a viewer stretches it over the image exactly
    ys, xs = np.nonzero(on_image > 0.5)
    sy, sx = image.shape[0] / on_image.shape[0], image.shape[1] / on_image.shape[1]
    assert abs(ys.min() * sy - 120) <= 4 and abs(xs.min() * sx - 20) <= 4 and abs((xs.max() + 1) * sx - 60) <= 4
    assert heat_on_image(heat, image.shape, "stretch").shape == (64, 64)  # stretch: the whole map
    x0, y0, x1, y1 = box_to_grid((20, 120, 60, 160), image.shape, 64, "pad")
    assert (x0, y0) == pytest.approx((16 + 20 * 0.32, 120 * 0.32)) and (x1, y1) == pytest.approx((16 + 60 * 0.32, 160 * 0.32))

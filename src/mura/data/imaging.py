"""Decoding, grayscale conversion, resizing and hashing of radiographs.

One implementation used by ingest, training, serving and the web UI, so a
picture is preprocessed the same way wherever it enters the system.

Resize policy (``data.resize``):
    ``stretch`` (default, as the seed): the image is resized to
    ``image_size × image_size`` ignoring its aspect ratio.
    ``pad``: the image is scaled so its longer side is ``image_size`` and
    centred on a black square, preserving the aspect ratio.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from mura.config import ResizePolicy

# The quarantine reasons, in one place so reports and tests agree.
REASON_MISSING = "missing"
REASON_EMPTY = "empty"
REASON_TRUNCATED = "truncated"
REASON_UNDECODABLE = "undecodable"
REASON_TOO_LARGE = "too_large"


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; ``reason`` is one of the REASON_* values."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def to_gray8(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an 8-bit grayscale array.

    L, LA, P, RGB, RGBA, 1, I;16*, I and F are handled. Alpha is composited on
    black (radiograph background). High bit-depth images are scaled by their
    effective bit depth, so a 16-bit file holding 12-bit data keeps its full
    contrast instead of becoming nearly black.

    Args:
        image: a decoded (``load()``-ed) PIL image.

    Returns:
        ``uint8`` array of shape (height, width).

    Raises:
        ImageDecodeError: the mode cannot be interpreted as an intensity image.
    """
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode in ("LA", "RGBA", "PA", "La", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        gray = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        gray *= rgba[..., 3] / 255.0
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    if mode in ("1", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image, dtype=np.float64)
        low = min(float(values.min()), 0.0)
        values = values - low
        top = float(values.max())
        if mode == "F":
            scale = top if top > 0 else 1.0
        else:
            bits = max(8, int(np.ceil(top)).bit_length())
            scale = float(2**bits - 1)
        return np.clip(np.rint(values * (255.0 / scale)), 0, 255).astype(np.uint8)
    raise ImageDecodeError(REASON_UNDECODABLE, f"unsupported image mode {mode}")


def decode_image(data: bytes, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decode PNG/JPEG (or any PIL format) bytes to 8-bit grayscale.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Returns:
        ``(gray, mode)``: the uint8 array and the original PIL mode.

    Raises:
        ImageDecodeError: empty, truncated, undecodable or too large.
    """
    if not data:
        raise ImageDecodeError(REASON_EMPTY, "file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(REASON_TOO_LARGE, f"{width}x{height} exceeds {max_pixels} pixels")
            image.load()
            return to_gray8(image), image.mode
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        # PIL's message names a BytesIO address; keep reports byte-reproducible.
        raise ImageDecodeError(REASON_UNDECODABLE, "cannot identify image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(REASON_TOO_LARGE, str(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        reason = REASON_TRUNCATED if "truncated" in text.lower() or "broken data stream" in text.lower() else REASON_UNDECODABLE
        raise ImageDecodeError(reason, text) from None


def resize_gray(gray: np.ndarray, image_size: int, policy: ResizePolicy = "stretch") -> np.ndarray:
    """Resize a grayscale array to ``image_size × image_size``.

    Args:
        gray: uint8 array (H, W).
        image_size: output side in pixels.
        policy: ``stretch`` or ``pad`` (see module docstring).

    Returns:
        uint8 array (image_size, image_size).

    Raises:
        ValueError: bad policy or a non-2D input.
    """
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale array, got shape {gray.shape}")
    image = Image.fromarray(gray)
    if policy == "stretch":
        out = image.resize((image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return np.asarray(out, dtype=np.uint8)
    if policy == "pad":
        height, width = gray.shape
        scale = image_size / max(height, width)
        new_w = max(1, round(width * scale))
        new_h = max(1, round(height * scale))
        scaled = image.resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=2.0)
        canvas = Image.new("L", (image_size, image_size), 0)
        canvas.paste(scaled, ((image_size - new_w) // 2, (image_size - new_h) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    raise ValueError(f"unknown resize policy {policy!r} (expected 'stretch' or 'pad')")


def cache_rows(pixels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows of the pixel cache in the given order, read from its memmap in ascending order (one forward pass on disk)."""
    rows = np.asarray(rows)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), *pixels.shape[1:]), np.uint8)
    out[order] = pixels[rows[order]]
    return out


def content_region(shape: tuple[int, int], image_size: int, policy: ResizePolicy = "stretch") -> tuple[int, int, int, int]:
    """The part of the resized square that holds the image, ``(x0, y0, x1, y1)`` (:func:`resize_gray`'s geometry) (pure).

    The whole square for ``stretch``; for ``pad``, the scaled image between the black bands.
    """
    if policy == "stretch":
        return 0, 0, image_size, image_size
    height, width = shape
    scale = image_size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (image_size - new_w) // 2, (image_size - new_h) // 2
    return left, top, left + new_w, top + new_h


def box_to_grid(
    box: tuple[float, float, float, float], shape: tuple[int, int], image_size: int, policy: ResizePolicy = "stretch"
) -> tuple[float, float, float, float]:
    """Where a box of an image lands in its resized square (:func:`resize_gray`'s geometry) (pure).

    Args:
        box: ``(x0, y0, x1, y1)`` in the image's pixels (x1/y1 exclusive).
        shape: the image's ``(height, width)``.
        image_size: the square's side.
        policy: ``stretch`` or ``pad``, as the image was resized.
    """
    height, width = shape
    x0, y0, x1, y1 = box
    if policy == "stretch":
        sx, sy = image_size / width, image_size / height
        return x0 * sx, y0 * sy, x1 * sx, y1 * sy
    scale = image_size / max(height, width)
    left, top, _, _ = content_region(shape, image_size, policy)
    return left + x0 * scale, top + y0 * scale, left + x1 * scale, top + y1 * scale


def heat_on_image(heat: np.ndarray, shape: tuple[int, int], policy: ResizePolicy = "stretch") -> np.ndarray:
    """The part of a square map (heatmap of the resized image) that covers the image of ``shape`` (pure).

    What a viewer stretches over the image: the map itself for ``stretch``, the map without the
    black bands for ``pad`` (so overlays and boxes land where the model looked, not stretched
    over the bands).
    """
    x0, y0, x1, y1 = content_region(shape, heat.shape[0], policy)
    return heat[y0:y1, x0:x1]


def dhash(gray: np.ndarray, hash_size: int = 8) -> int:
    """Difference hash: a 64-bit perceptual hash robust to small edits.

    Args:
        gray: uint8 array (H, W).
        hash_size: side of the hash grid (64 bits for 8).

    Returns:
        The hash as a Python int.
    """
    small = np.asarray(Image.fromarray(gray).resize((hash_size + 1, hash_size), Image.Resampling.BOX), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def pixel_hash(gray: np.ndarray) -> str:
    """Hash of decoded pixels (and shape): equal for the same picture in another encoding."""
    digest = hashlib.sha1(str(gray.shape).encode())
    digest.update(np.ascontiguousarray(gray).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class PreparedImage:
    """An image as the cache stores it, with what ingest reports about it."""

    pixels: np.ndarray
    width: int
    height: int
    mode: str
    sha256: str
    pixel_hash: str
    dhash: int
    thumbnail: np.ndarray


THUMBNAIL_SIZE = 32


def thumbnail(gray: np.ndarray, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """Box-filtered ``size × size`` uint8 thumbnail (for near-duplicate confirmation)."""
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def prepare_image(data: bytes, image_size: int, policy: ResizePolicy, max_pixels: int) -> PreparedImage:
    """Decode, convert, resize and hash one image (the ingest and serving path).

    Args:
        data: encoded image bytes.
        image_size: output side in pixels.
        policy: resize policy.
        max_pixels: decompression-bomb limit.

    Returns:
        The prepared image.

    Raises:
        ImageDecodeError: the bytes are not a usable image.
    """
    gray, mode = decode_image(data, max_pixels=max_pixels)
    pixels = resize_gray(gray, image_size, policy)
    return PreparedImage(
        pixels=pixels,
        width=gray.shape[1],
        height=gray.shape[0],
        mode=mode,
        sha256=sha256_bytes(data),
        pixel_hash=pixel_hash(gray),
        dhash=dhash(pixels),
        thumbnail=thumbnail(pixels),
    )

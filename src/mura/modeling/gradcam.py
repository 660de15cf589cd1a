"""Grad-CAM heatmaps for the variants and the ensemble (exact, and the same on every runtime).

A visual aid showing which regions drove a prediction — **not** a localisation
of disease. For this architecture (backbone → global average pooling → dense →
batch norm → dropout → sigmoid) the Grad-CAM channel weights
``alpha_k = mean_ij dy/dA_k(i,j)`` equal ``dy/dg_k / (H*W)`` where ``g`` is the
pooled feature vector, and ``dy/dg`` has a closed form through the small head,
computed here from its weights with NumPy. So Grad-CAM needs only the
backbone's last feature maps and the head's weights: the Keras models give
them (:func:`gradcam`), and so does the optimized runtime, whose exported model
returns each variant's feature maps next to its probability
(:func:`cam_from_features` with :class:`HeadWeights` saved at registration).
Nothing here imports Keras at module level, so serving on the optimized
runtime never loads TensorFlow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import keras

__all__ = ["HeadWeights", "cam_from_features", "feature_model", "gradcam", "head_gradient", "overlay", "png_bytes", "upsample"]

_HEAD_ARRAYS = ("dense_kernel", "dense_bias", "gamma", "beta", "moving_mean", "moving_variance", "out_kernel", "out_bias")


@dataclass(frozen=True)
class HeadWeights:
    """The seed's head in inference mode, as NumPy arrays (float64)."""

    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    moving_mean: np.ndarray
    moving_variance: np.ndarray
    out_kernel: np.ndarray
    out_bias: np.ndarray
    epsilon: float

    @classmethod
    def from_model(cls, model: Any) -> HeadWeights:
        """Read the head of a classifier from :func:`mura.modeling.models.build_model`."""
        dense, bn, out = model.get_layer("dense"), model.get_layer("head_bn"), model.get_layer("abnormal")
        arrays = [*dense.get_weights(), *bn.get_weights(), *out.get_weights()]
        values = dict(zip(_HEAD_ARRAYS, (np.asarray(a, np.float64) for a in arrays), strict=True))
        return cls(**values, epsilon=float(bn.epsilon))

    @staticmethod
    def save_all(heads: dict[str, HeadWeights], path: Path) -> None:
        """Write every variant's head to one ``.npz`` file."""
        arrays = {f"{name}/{key}": getattr(head, key) for name, head in heads.items() for key in _HEAD_ARRAYS}
        arrays.update({f"{name}/epsilon": np.asarray(head.epsilon) for name, head in heads.items()})
        np.savez(path, **arrays)

    @classmethod
    def load_all(cls, path: Path) -> dict[str, HeadWeights]:
        """Read the heads written by :meth:`save_all`."""
        with np.load(path) as data:
            names = sorted({key.split("/")[0] for key in data.files})
            return {n: cls(**{k: data[f"{n}/{k}"] for k in _HEAD_ARRAYS}, epsilon=float(data[f"{n}/epsilon"])) for n in names}


def head_gradient(head: HeadWeights, pooled: np.ndarray) -> np.ndarray:
    """d P(abnormal) / d pooled features, shape (N, C), for the seed's head in inference mode."""
    h = pooled @ head.dense_kernel + head.dense_bias
    active = (h > 0).astype(np.float64)
    scale = head.gamma / np.sqrt(head.moving_variance + head.epsilon)
    normed = np.maximum(h, 0) * scale + (head.beta - head.moving_mean * scale)
    z = normed @ head.out_kernel + head.out_bias  # (N, 1)
    p = 1.0 / (1.0 + np.exp(-z))
    gradient: np.ndarray = (p * (1 - p)) * ((active * scale * head.out_kernel[:, 0]) @ head.dense_kernel.T)
    return gradient


def cam_from_features(maps: np.ndarray, head: HeadWeights, size: int) -> np.ndarray:
    """Grad-CAM maps in [0, 1] at ``size × size`` from the backbone's last feature maps.

    Args:
        maps: (N, h, w, C) feature maps of the images.
        head: the variant's head.
        size: output side (the model's input side).

    Returns:
        float32 (N, size, size); all zeros where no region pushes the prediction up.
    """
    maps = np.asarray(maps, dtype=np.float64)
    pooled = maps.mean(axis=(1, 2))
    alpha = head_gradient(head, pooled)  # proportional to the spatial mean gradient
    cam = np.maximum(np.einsum("nhwc,nc->nhw", maps, alpha), 0.0)
    out = np.zeros((len(maps), size, size), np.float32)
    for i, m in enumerate(cam):
        top = m.max()
        if top > 0:
            out[i] = np.clip(upsample(m / top, size), 0.0, 1.0)
    return out


def upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """A coarse map (h, w) resized to ``size × size`` as every heatmap is (bilinear, pixel centres aligned), float32."""
    return np.asarray(Image.fromarray(np.asarray(grid, np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR))


def feature_model(model: keras.Model) -> keras.Model:
    """A model from the classifier's input to the backbone's last feature map (shared layers)."""
    import keras  # lazy: heavy (seconds): only when a model is built, trained or run

    inputs = keras.Input(model.input_shape[1:], dtype="uint8")
    x = inputs
    names = {layer.name for layer in model.layers}
    if "augment" in names:
        x = model.get_layer("augment")(x, training=False)
    x = model.get_layer("preprocess")(x)
    return keras.Model(inputs, model.get_layer("backbone")(x, training=False))


def gradcam(model: keras.Model, pixels: np.ndarray, features: keras.Model | None = None) -> np.ndarray:
    """Grad-CAM maps in [0, 1] at the input resolution, from a Keras classifier.

    Args:
        model: a classifier from :func:`mura.modeling.models.build_model`.
        pixels: uint8 (N, S, S).
        features: a cached :func:`feature_model` of ``model``.

    Returns:
        float32 (N, S, S); all zeros where no region pushes the prediction up.
    """
    features = features or feature_model(model)
    maps = np.asarray(features.predict_on_batch(np.asarray(pixels, np.uint8)[..., None]), dtype=np.float64)
    return cam_from_features(maps, HeadWeights.from_model(model), pixels.shape[1])


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size) over a grayscale image as RGB uint8 (jet colormap)."""
    from matplotlib import colormaps  # lazy: heavy: only when plotting

    height, width = gray.shape
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    colored = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255.0
    base = np.repeat(gray[..., None].astype(np.float64), 3, axis=-1)
    weight = alpha * np.clip(heat, 0, 1)[..., None]
    blended: np.ndarray = np.clip(base * (1 - weight) + colored * weight, 0, 255).astype(np.uint8)
    return blended


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """Encode a grayscale or RGB uint8 array as PNG (zlib level 1 is ~4× faster, for pages on the wire)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=compress_level)
    return buffer.getvalue()

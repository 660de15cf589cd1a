"""Grad-CAM heatmaps for the variants and the ensemble (backend-agnostic).

A visual aid showing which regions drove a prediction — **not** a localisation
of disease. For this architecture (backbone → global average pooling → dense →
batch norm → dropout → sigmoid) the Grad-CAM channel weights
``alpha_k = mean_ij dy/dA_k(i,j)`` equal ``dy/dg_k / (H*W)`` where ``g`` is the
pooled feature vector, and ``dy/dg`` has a closed form through the small head
(computed here from its weights with NumPy), so no backend-specific autodiff is
needed and the maps are exact Grad-CAM.
"""

from __future__ import annotations

import io

import keras
import numpy as np
from PIL import Image


def feature_model(model: keras.Model) -> keras.Model:
    """A model from the classifier's input to the backbone's last feature map (shared layers)."""
    inputs = keras.Input(model.input_shape[1:], dtype="uint8")
    x = inputs
    names = {layer.name for layer in model.layers}
    if "augment" in names:
        x = model.get_layer("augment")(x, training=False)
    x = model.get_layer("preprocess")(x)
    return keras.Model(inputs, model.get_layer("backbone")(x, training=False))


def head_gradient(model: keras.Model, pooled: np.ndarray) -> np.ndarray:
    """d P(abnormal) / d pooled features, shape (N, C), for the seed's head in inference mode."""
    dense, bn, out = model.get_layer("dense"), model.get_layer("head_bn"), model.get_layer("abnormal")
    w1, b1 = (np.asarray(v, np.float64) for v in dense.get_weights())
    gamma, beta, mean, var = (np.asarray(v, np.float64) for v in bn.get_weights())
    w2, b2 = (np.asarray(v, np.float64) for v in out.get_weights())
    h = pooled @ w1 + b1
    active = (h > 0).astype(np.float64)
    scale = gamma / np.sqrt(var + bn.epsilon)
    normed = np.maximum(h, 0) * scale + (beta - mean * scale)
    z = normed @ w2 + b2  # (N, 1)
    p = 1.0 / (1.0 + np.exp(-z))
    gradient: np.ndarray = (p * (1 - p)) * ((active * scale * w2[:, 0]) @ w1.T)
    return gradient


def gradcam(model: keras.Model, pixels: np.ndarray, features: keras.Model | None = None) -> np.ndarray:
    """Grad-CAM maps in [0, 1] at the input resolution.

    Args:
        model: a classifier from :func:`mura.modeling.models.build_model`.
        pixels: uint8 (N, S, S).
        features: a cached :func:`feature_model` of ``model``.

    Returns:
        float32 (N, S, S); all zeros where no region pushes the prediction up.
    """
    features = features or feature_model(model)
    maps = np.asarray(features.predict_on_batch(np.asarray(pixels, np.uint8)[..., None]), dtype=np.float64)
    pooled = maps.mean(axis=(1, 2))
    alpha = head_gradient(model, pooled)  # proportional to the spatial mean gradient
    cam = np.maximum(np.einsum("nhwc,nc->nhw", maps, alpha), 0.0)
    size = pixels.shape[1]
    out = np.zeros((len(pixels), size, size), np.float32)
    for i, m in enumerate(cam):
        top = m.max()
        if top > 0:
            resized = Image.fromarray((m / top).astype(np.float32), mode="F").resize((size, size), Image.Resampling.BILINEAR)
            out[i] = np.clip(np.asarray(resized), 0.0, 1.0)
    return out


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heatmap (any size) over a grayscale image as RGB uint8 (jet colormap)."""
    from matplotlib import colormaps

    height, width = gray.shape
    heat = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))
    colored = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255.0
    base = np.repeat(gray[..., None].astype(np.float64), 3, axis=-1)
    weight = alpha * np.clip(heat, 0, 1)[..., None]
    blended: np.ndarray = np.clip(base * (1 - weight) + colored * weight, 0, 255).astype(np.uint8)
    return blended


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a grayscale or RGB uint8 array as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()

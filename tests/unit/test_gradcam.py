"""Grad-CAM's closed-form head gradient (what the optimized runtime uses) against the backend's own autodiff.

The heatmaps of every runtime come from :func:`mura.modeling.gradcam.cam_from_features`, whose
channel weights are derived by hand through the seed's head. Here they are checked on a real
DenseNet-169 variant (random weights, 96 px: 3 × 3 feature maps of 1,664 channels), with the
head's BatchNorm given non-trivial statistics so every term of the derivation counts.

Tolerances: TensorFlow computes in float32 and the closed form in float64, so the channel
weights agree to a relative 1e-4 of their largest magnitude, and the [0, 1] heatmaps to 1e-3.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mura.config import ModelSpec
from mura.modeling.gradcam import HeadWeights, cam_from_features, feature_model, gradcam, head_gradient

SIZE = 96


@pytest.fixture(scope="module")
def variant():
    import keras

    from mura.modeling.models import build_model

    keras.utils.set_random_seed(7)
    model = build_model(ModelSpec("densenet169", dense_units=16, dropout=0.5), SIZE, "none")
    bn = model.get_layer("head_bn")
    rng = np.random.default_rng(7)
    gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
    bn.set_weights(
        [
            rng.uniform(0.5, 2.0, gamma.shape),
            rng.normal(0, 0.5, beta.shape),
            rng.normal(0, 0.3, mean.shape),
            rng.uniform(0.2, 3, var.shape),
        ]
    )
    pixels = rng.integers(0, 256, (3, SIZE, SIZE)).astype(np.uint8)
    return model, pixels


def _autodiff_channel_weights(model, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha_k = mean_ij dP/dA_k(i,j) by TensorFlow's GradientTape through the model's own head layers; and P."""
    import tensorflow as tf

    tensor = tf.constant(maps, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        x = model.get_layer("pool")(tensor)
        x = model.get_layer("dense")(x)
        x = model.get_layer("head_bn")(x, training=False)
        x = model.get_layer("dropout")(x, training=False)
        probability = model.get_layer("abnormal")(x)
    gradient = tape.gradient(probability, tensor).numpy().astype(np.float64)  # images are independent: d(sum)/dA
    return gradient.mean(axis=(1, 2)), probability.numpy()[:, 0]


def test_closed_form_channel_weights_equal_autodiff(variant) -> None:
    model, pixels = variant
    maps = np.asarray(feature_model(model).predict_on_batch(pixels[..., None]), np.float64)
    expected, probability = _autodiff_channel_weights(model, maps)
    h, w = maps.shape[1:3]
    closed_form = head_gradient(HeadWeights.from_model(model), maps.mean(axis=(1, 2))) / (h * w)
    np.testing.assert_allclose(probability, model.predict_on_batch(pixels[..., None])[:, 0], rtol=1e-5)  # the same head
    assert np.abs(expected).max() > 0  # a gradient to compare, not zeros
    np.testing.assert_allclose(closed_form, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_heatmap_equals_the_one_from_autodiff(variant) -> None:
    model, pixels = variant
    maps = np.asarray(feature_model(model).predict_on_batch(pixels[..., None]), np.float64)
    alpha, _ = _autodiff_channel_weights(model, maps)
    reference = np.zeros((len(maps), SIZE, SIZE), np.float32)
    for i, cam in enumerate(np.maximum(np.einsum("nhwc,nc->nhw", maps, alpha), 0.0)):
        if cam.max() > 0:
            resized = Image.fromarray((cam / cam.max()).astype(np.float32), mode="F").resize(
                (SIZE, SIZE), Image.Resampling.BILINEAR
            )
            reference[i] = np.clip(np.asarray(resized), 0, 1)
    assert reference.max() > 0
    np.testing.assert_allclose(cam_from_features(maps, HeadWeights.from_model(model), SIZE), reference, atol=1e-3)
    np.testing.assert_allclose(gradcam(model, pixels), reference, atol=1e-3)  # the Keras path, end to end

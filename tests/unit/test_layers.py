from __future__ import annotations

import keras
import numpy as np
import pytest

from mura.modeling.layers import RadiographPreprocess, RandomAffine


@pytest.mark.parametrize(
    "mode,reference",
    [("torch", keras.applications.densenet.preprocess_input), ("caffe", keras.applications.resnet.preprocess_input)],
)
def test_preprocess_matches_keras_applications(mode: str, reference) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 1)).astype(np.uint8)
    ours = keras.ops.convert_to_numpy(RadiographPreprocess(mode)(gray))
    expected = reference(np.repeat(gray.astype(np.float32), 3, axis=-1))
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


def test_augmentation_only_in_training() -> None:
    images = np.random.default_rng(1).integers(0, 256, (4, 16, 16, 1)).astype(np.uint8)
    layer = RandomAffine(seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images.astype(np.float32))
    augmented = keras.ops.convert_to_numpy(layer(images, training=True))
    assert augmented.shape == images.shape and not np.allclose(augmented, images)


def test_identity_transform_when_ranges_are_zero() -> None:
    images = np.random.default_rng(2).integers(0, 256, (3, 12, 12, 1)).astype(np.uint8)
    layer = RandomAffine(rotation=0, shift=0, zoom=0, horizontal_flip=False, seed=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(images, training=True)), images, atol=1e-3)


def test_flip_only_flips() -> None:
    image = np.zeros((1, 8, 8, 1), np.uint8)
    image[0, :, :2] = 255  # bright left edge
    layer = RandomAffine(rotation=0, shift=0, zoom=0, horizontal_flip=True, seed=0)
    seen = set()
    for _ in range(12):
        out = keras.ops.convert_to_numpy(layer(image, training=True))[0, :, :, 0]
        assert np.allclose(out, image[0, :, :, 0], atol=1e-3) or np.allclose(out, image[0, :, ::-1, 0], atol=1e-3)
        seen.add(bool(out[:, 0].max() > 0))
    assert seen == {True, False}


def test_single_matrix_composes_rotation_shift_zoom() -> None:
    layer = RandomAffine(rotation=20, shift=0.2, zoom=0.2, horizontal_flip=True, seed=5)
    m = keras.ops.convert_to_numpy(layer.transforms(256, 32, 32))
    linear = m[:, [0, 1, 3, 4]].reshape(-1, 2, 2)
    scales = np.sqrt(np.abs(np.linalg.det(linear)))
    assert scales.min() >= 0.8 - 1e-6 and scales.max() <= 1.2 + 1e-6
    assert np.abs(m[:, 6:]).max() == 0
    centre = np.array([15.5, 15.5, 1.0])
    shifts = np.stack([m[:, :3] @ centre, m[:, 3:6] @ centre], axis=1) - 15.5
    assert np.abs(shifts).max() <= 0.2 * 32 + 1e-4 and np.abs(shifts).max() > 3


def test_layers_serialize() -> None:
    for layer in (RandomAffine(rotation=7, seed=1), RadiographPreprocess("caffe")):
        clone = layer.__class__.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()

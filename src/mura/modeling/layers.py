"""Keras layers shared by training and serving (backend-agnostic: ``keras.ops`` only).

* :class:`RandomAffine` — the seed's augmentation (rotation, width/height shift,
  zoom, horizontal flip) composed into **one** affine matrix per image and
  resampled once, on the accelerator, only when ``training=True``.
* :class:`RadiographPreprocess` — grayscale → 3 channels → the backbone's own
  ImageNet normalisation (``torch`` mode for DenseNet, ``caffe`` mode for ResNet).

Both live inside the saved model, so serving feeds raw uint8 pixels and can
never preprocess differently from training.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

# keras.applications' ImageNet statistics (imagenet_utils.preprocess_input).
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="mura")
class RandomAffine(keras.layers.Layer):
    """Random rotation, shift, zoom and horizontal flip as one affine resampling.

    Args:
        rotation: maximum rotation in degrees (uniform in ±rotation).
        shift: maximum shift as a fraction of width/height.
        zoom: zoom factor drawn uniformly in [1 - zoom, 1 + zoom].
        horizontal_flip: flip left-right with probability 1/2.
        fill_mode: how to fill points outside the image (``nearest``, ``constant``, ``reflect``).
        seed: seed of the layer's random generator.
    """

    def __init__(
        self,
        rotation: float = 20.0,
        shift: float = 0.2,
        zoom: float = 0.2,
        horizontal_flip: bool = True,
        fill_mode: str = "nearest",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rotation = float(rotation)
        self.shift = float(shift)
        self.zoom = float(zoom)
        self.horizontal_flip = bool(horizontal_flip)
        self.fill_mode = fill_mode
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def transforms(self, batch: Any, height: int, width: int) -> Any:
        """Per-image ``[a0, a1, a2, b0, b1, b2, 0, 0]`` output→input maps, shape (batch, 8)."""
        uniform = lambda: keras.random.uniform((batch,), -1.0, 1.0, seed=self.generator)  # noqa: E731
        theta = uniform() * (self.rotation * math.pi / 180.0)
        scale = 1.0 + uniform() * self.zoom
        tx, ty = uniform() * (self.shift * width), uniform() * (self.shift * height)
        flip = ops.where(uniform() < 0.0, -1.0, 1.0) if self.horizontal_flip else ops.ones((batch,))
        cos, sin = ops.cos(theta) * scale, ops.sin(theta) * scale
        # input = M (output - centre) + centre + t, with M = scale * R(theta) * diag(flip, 1)
        m00, m01, m10, m11 = cos * flip, -sin, sin * flip, cos
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx + tx - m00 * cx - m01 * cy
        b2 = cy + ty - m10 * cx - m11 * cy
        zeros = ops.zeros((batch,))
        return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)

    def call(self, images: Any, training: bool | None = None) -> Any:
        images = ops.cast(images, self.compute_dtype)
        if not training:
            return images
        shape = ops.shape(images)
        matrices = self.transforms(shape[0], images.shape[1], images.shape[2])
        out = ops.image.affine_transform(
            ops.cast(images, "float32"), matrices, interpolation="bilinear", fill_mode=self.fill_mode
        )
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            rotation=self.rotation,
            shift=self.shift,
            zoom=self.zoom,
            horizontal_flip=self.horizontal_flip,
            fill_mode=self.fill_mode,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="mura")
class RadiographPreprocess(keras.layers.Layer):
    """Repeat a grayscale channel to RGB and apply the backbone's ImageNet preprocessing.

    Equivalent to ``keras.applications.<arch>.preprocess_input`` on the
    channel-repeated image (tested), written with ``keras.ops`` so it runs on any backend.

    Args:
        mode: ``torch`` (DenseNet: /255, ImageNet mean/std) or ``caffe``
            (ResNet: BGR, subtract the ImageNet mean, no scaling).
    """

    def __init__(self, mode: str = "torch", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("torch", "caffe"):
            raise ValueError(f"unknown preprocessing mode {mode!r} (expected 'torch' or 'caffe')")
        self.mode = mode

    def call(self, images: Any) -> Any:
        x = ops.cast(images, self.compute_dtype)
        x = ops.repeat(x, 3, axis=-1)
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, self.compute_dtype)
            std = ops.convert_to_tensor(_TORCH_STD, self.compute_dtype)
            return (x / 255.0 - mean) / std
        return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, self.compute_dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], 3)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(mode=self.mode)
        return config

"""Inference shared by the ensemble stage, the served model, the Python API and the web UI.

The variants are composed into one Keras model with one output column per
variant, so a study's views go through all four networks in one batched,
compiled call (instead of one ``model.predict`` per image per model).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np

import mura.modeling.layers  # noqa: F401  (registers the custom layers for loading)
from mura.modeling.averaging import average_probabilities

logger = logging.getLogger(__name__)


def load_variants(paths: Mapping[str, str | Path]) -> dict[str, keras.Model]:
    """Load the variants' ``.keras`` files (name → model), keeping the given order."""
    return {name: keras.saving.load_model(path, compile=False) for name, path in paths.items()}


def combine(models: Mapping[str, keras.Model]) -> keras.Model:
    """One model computing every variant: uint8 (N, S, S, 1) → float32 (N, n_variants)."""
    first = next(iter(models.values()))
    size = first.input_shape[1]
    inputs = keras.Input((size, size, 1), dtype="uint8", name="image")
    outputs = []
    for name, model in models.items():
        model.name = name  # two variants share an architecture name
        outputs.append(model(inputs, training=False))
    merged = keras.layers.Concatenate(axis=1, name="variants")(outputs) if len(outputs) > 1 else outputs[0]
    return keras.Model(inputs, merged, name="mura_variants")


def combine_with_features(models: Mapping[str, keras.Model]) -> keras.Model:
    """One model giving every variant's probability and its backbone's last feature maps.

    Outputs ``[probabilities (N, n_variants), features of variant 1 (N, h, w, C), ...]``:
    the graph exported to the optimized runtime, so that Grad-CAM there is exact
    (:func:`mura.modeling.gradcam.cam_from_features`). Each variant's layers are
    replayed in inference mode with a second output tapped at the backbone; the
    weights are the classifier's own (tested equal to the classifier's output).
    """
    first = next(iter(models.values()))
    size = first.input_shape[1]
    inputs = keras.Input((size, size, 1), dtype="uint8", name="image")
    probabilities, features = [], []
    for name, model in models.items():
        # The classifier is a chain (image → augment → preprocess → backbone → pool → dense →
        # head_bn → dropout → abnormal): replay it in inference mode, keeping the backbone's output.
        x = tap_input = keras.Input(model.input_shape[1:], dtype="uint8")
        maps = None
        for layer in model.layers[1:]:
            x = layer(x, training=False)
            if layer.name == "backbone":
                maps = x
        probability, maps = keras.Model(tap_input, [x, maps], name=name)(inputs, training=False)
        probabilities.append(probability)
        features.append(keras.ops.cast(maps, "float32"))
    merged = keras.layers.Concatenate(axis=1, name="variants")(probabilities) if len(probabilities) > 1 else probabilities[0]
    return keras.Model(inputs, [merged, *features], name="mura_variants_features")


@dataclass
class VariantRunner:
    """The combined model plus what is needed to call it on raw pixels."""

    model: keras.Model
    names: list[str]
    image_size: int
    batch_size: int = 32
    variants: dict[str, keras.Model] | None = None  # the individual models (for heatmaps)
    fixed_batch: bool = False  # pad every batch to batch_size: one compiled shape (bulk prediction)
    thread_safe: ClassVar[bool] = False  # serve one batch at a time (TensorFlow's own threads use the cores)
    precision: ClassVar[str] = "f32"  # Keras serves the trained float32 weights

    @property
    def description(self) -> str:
        """One line for logs: the runtime and its precision."""
        return f"Keras ({keras.backend.backend()}) {self.precision}"

    def prepare_heatmaps(self) -> None:
        """Nothing to prepare: Grad-CAM builds each variant's feature model at its first use."""

    @property
    def _pad(self) -> bool:
        return bool(keras.backend.backend() == "jax")

    @classmethod
    def from_paths(cls, paths: Mapping[str, str | Path], batch_size: int = 32, fixed_batch: bool = False) -> VariantRunner:
        """Load and combine the variants."""
        models = load_variants(paths)
        combined = combine(models)
        return cls(combined, list(models), int(combined.input_shape[1]), batch_size, models, fixed_batch)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """P(abnormal) per image and variant: (N, S, S) uint8 → (N, n_variants) float64.

        On JAX, batches are padded to the next power of two (at most ``batch_size``) so
        XLA compiles a handful of shapes; TensorFlow's ``predict_on_batch`` relaxes the
        batch dimension itself after two shapes, so nothing is padded (no wasted compute).
        With ``fixed_batch`` (bulk prediction) every batch is padded to ``batch_size`` on
        any backend: one trace instead of a second one for the last, smaller batch
        (about 13 s for the four demo variants on a 2-core CPU, against < 1 s of padding).
        """
        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.shape[1:] != (self.image_size, self.image_size):
            raise ValueError(f"expected (N, {self.image_size}, {self.image_size}) pixels, got {pixels.shape}")
        out = np.zeros((len(pixels), len(self.names)), np.float64)
        for start in range(0, len(pixels), self.batch_size):
            chunk = pixels[start : start + self.batch_size]
            if self.fixed_batch:
                padded = self.batch_size
            elif self._pad:
                padded = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
            else:
                padded = len(chunk)
            batch = np.zeros((padded, self.image_size, self.image_size, 1), np.uint8)
            batch[: len(chunk), ..., 0] = chunk
            scores = np.asarray(self.model.predict_on_batch(batch), dtype=np.float64).reshape(padded, -1)
            out[start : start + len(chunk)] = scores[: len(chunk)]
        return out

    def predict_ensemble(self, pixels: np.ndarray, weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(per_variant, ensemble)`` probabilities for uint8 pixels."""
        per_variant = self.predict(pixels)
        return per_variant, average_probabilities(per_variant, weights)


__all__ = ["VariantRunner", "combine", "combine_with_features", "load_variants"]

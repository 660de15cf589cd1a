"""Model factories: the seed's DenseNet-169 and ResNet-101 classifiers.

``build_model`` returns one Keras model that takes raw uint8 grayscale pixels
``(batch, S, S, 1)`` and outputs P(abnormal): augmentation (training only) →
grayscale-to-RGB and the backbone's own ``preprocess_input`` → backbone →
the seed's head (global average pooling → dense → batch norm → dropout →
one sigmoid unit, normal initializer).

Preprocessing choice: the seed divides pixels by 255, which does not match
what the ImageNet weights were trained with; we use each backbone's own
``preprocess_input`` (torch mode for DenseNet, caffe mode for ResNet) so
transfer learning starts from the statistics the weights expect.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from mura.config import AugmentParams, ModelSpec
from mura.errors import ConfigError
from mura.modeling.layers import RadiographPreprocess, RandomAffine
from mura.settings import runtime_settings

logger = logging.getLogger(__name__)

# keras.applications ResNet names the BatchNorm closing a block's residual branch like this.
_RESIDUAL_BN = re.compile(r"conv\d+_block\d+_3_bn")


@dataclass(frozen=True)
class Architecture:
    """A backbone: its constructor, preprocessing mode and ImageNet weight file name."""

    constructor: Any
    preprocess: str
    weights_file: str | None


def _simple_cnn(include_top: bool, weights: str | None, input_shape: tuple[int, int, int], pooling: None = None) -> keras.Model:
    """A small 4-block CNN: not one of the seed's models; for fast tests and smoke runs only."""
    if weights not in (None, "none"):
        raise ConfigError("arch 'simple_cnn' has no pretrained weights; use weights: none")
    inputs = keras.Input(input_shape)
    x = inputs
    for filters in (16, 32, 64, 96):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    return keras.Model(inputs, x, name="simple_cnn")


ARCHITECTURES: dict[str, Architecture] = {
    "densenet169": Architecture(
        keras.applications.DenseNet169, "torch", "densenet169_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "resnet101": Architecture(keras.applications.ResNet101, "caffe", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "simple_cnn": Architecture(_simple_cnn, "torch", None),
}


def keras_cache_dir() -> Path:
    """Where Keras looks for downloaded weights (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def resolve_weights(arch: str, weights: str) -> str | None:
    """Turn the ``train.pretrained`` param into what ``keras.applications`` accepts.

    Args:
        arch: architecture name.
        weights: ``imagenet``, ``none`` or a path to a no-top weights file.

    Returns:
        ``None`` (random init) or a path to an existing weights file.

    Raises:
        ConfigError: unknown arch, a missing file, or ImageNet weights that are
            neither cached nor downloadable (one line saying where to put them).
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown arch {arch!r} (expected one of {sorted(ARCHITECTURES)})")
    if weights == "none":
        return None
    if weights == "imagenet":
        spec = ARCHITECTURES[arch]
        if spec.weights_file is None:
            raise ConfigError(f"arch {arch!r} has no ImageNet weights; use weights: none")
        cached = keras_cache_dir() / spec.weights_file
        if cached.is_file():
            return str(cached)
        if runtime_settings().offline:
            raise ConfigError(
                f"ImageNet weights for {arch} not found: put {spec.weights_file} at {cached} "
                f"(or set train.pretrained to its path, or to none); unset MURA_OFFLINE to let Keras download it"
            )
        family = "densenet" if arch.startswith("densenet") else "resnet"
        url = f"https://storage.googleapis.com/tensorflow/keras-applications/{family}/{spec.weights_file}"
        try:
            return str(keras.utils.get_file(spec.weights_file, url, cache_subdir="models"))
        except Exception as exc:  # network errors come in many types
            raise ConfigError(
                f"ImageNet weights for {arch} not found and not downloadable ({type(exc).__name__}): "
                f"put {spec.weights_file} at {cached} (from {url}), or set train.pretrained to a path or none"
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"weights file {weights!r} not found (train.pretrained must be imagenet, none or a path)")
    return str(path)


def build_model(
    spec: ModelSpec,
    image_size: int,
    pretrained: str = "none",
    augment: AugmentParams | None = None,
    freeze_batchnorm: bool = False,
    seed: int | None = None,
    zero_init_residual: bool = False,
    batchnorm_momentum: float = 0.99,
) -> keras.Model:
    """Build a classifier taking uint8 grayscale ``(batch, S, S, 1)`` and returning P(abnormal).

    Args:
        spec: the variant's ``models.<name>`` entry: ``arch`` (``densenet169``, ``resnet101``,
            the seed's, or ``simple_cnn`` for tests) and the head's width and dropout.
        image_size: input side ``S``.
        pretrained: ``imagenet``, ``none`` or a path to backbone weights.
        augment: augmentation params, or None for no augmentation layer.
        freeze_batchnorm: run the backbone with ``training=False`` so BatchNorm
            keeps its (pretrained) statistics while fine-tuning (keras-io transfer
            learning guide: updating them destroys what the model learned).
        seed: seed of the augmentation layer.
        zero_init_residual: with random init only, start the last BatchNorm γ of
            every residual branch at 0, so each ResNet block begins as the identity
            (Goyal et al. 2017, "Accurate, large minibatch SGD"); a deep ResNet then
            trains from scratch much sooner. No effect on DenseNet or on loaded weights.
        batchnorm_momentum: momentum of every BatchNorm's moving statistics (backbone and head).
            Keras's 0.99 keeps a third of the initial statistics after ~110 steps, so a short
            training from scratch validates on statistics its weights no longer match; 0.9
            forgets them within an epoch of 30 steps.

    Returns:
        An uncompiled ``keras.Model`` named after the architecture; the backbone is the
        layer named ``backbone``.

    Raises:
        ConfigError: unknown arch, bad size, or unavailable weights.
    """
    if image_size < 32:
        raise ConfigError(f"data.image_size={image_size}: the backbones need at least 32 pixels")
    arch = spec.arch
    weights_file = resolve_weights(arch, pretrained)
    architecture = ARCHITECTURES[arch]
    backbone = architecture.constructor(include_top=False, weights=weights_file, input_shape=(image_size, image_size, 3))
    backbone.name = "backbone"
    if zero_init_residual and weights_file is None:
        zero_residual_gammas(backbone)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = batchnorm_momentum
    inputs = keras.Input((image_size, image_size, 1), dtype="uint8", name="image")
    x = inputs
    if augment is not None:
        x = RandomAffine(
            augment.rotation, augment.shift, augment.zoom, augment.horizontal_flip, augment.fill_mode, seed=seed, name="augment"
        )(x)
    x = RadiographPreprocess(architecture.preprocess, name="preprocess")(x)
    x = backbone(x, training=False) if freeze_batchnorm else backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    init = keras.initializers.RandomNormal(stddev=0.01, seed=seed)
    x = keras.layers.Dense(spec.dense_units, activation="relu", kernel_initializer=init, name="dense")(x)
    x = keras.layers.BatchNormalization(momentum=batchnorm_momentum, name="head_bn")(x)
    x = keras.layers.Dropout(spec.dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=init, dtype="float32", name="abnormal")(x)
    return keras.Model(inputs, outputs, name=arch)


def zero_residual_gammas(backbone: keras.Model) -> int:
    """Set γ of the BatchNorm closing each residual branch (``convN_blockM_3_bn``) to 0.

    Returns:
        How many layers were changed (0 for backbones without residual blocks).
    """
    changed = 0
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and _RESIDUAL_BN.fullmatch(layer.name):
            layer.gamma.assign(keras.ops.zeros_like(layer.gamma))
            changed += 1
    return changed


def set_backbone_trainable(model: keras.Model, trainable: bool, freeze_batchnorm: bool = True) -> None:
    """Freeze or unfreeze the backbone for the two-phase schedule (keras-io ``unfreeze_model``).

    BatchNorm layers stay frozen when ``freeze_batchnorm`` is true; recompile afterwards.

    Args:
        model: a model from :func:`build_model`.
        trainable: unfreeze (True) or freeze (False) the backbone.
        freeze_batchnorm: keep BatchNorm layers non-trainable when unfreezing.
    """
    backbone = model.get_layer("backbone")
    backbone.trainable = trainable
    if trainable and freeze_batchnorm:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False

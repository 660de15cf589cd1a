from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from mura.config import AugmentParams, ModelSpec
from mura.errors import ConfigError
from mura.modeling.models import build_model, resolve_weights, set_backbone_trainable, zero_residual_gammas


@pytest.mark.parametrize("arch,preprocess", [("densenet169", "torch"), ("resnet101", "caffe"), ("simple_cnn", "torch")])
def test_build_model_shapes_head_and_preprocessing(arch: str, preprocess: str) -> None:
    model = build_model(ModelSpec(arch, dense_units=16, dropout=0.25), 32, "none", AugmentParams(), seed=0)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 1)
    names = [layer.name for layer in model.layers]
    assert names[1:] == ["augment", "preprocess", "backbone", "pool", "dense", "head_bn", "dropout", "abnormal"]
    assert model.get_layer("preprocess").mode == preprocess
    assert model.get_layer("dense").units == 16 and model.get_layer("dropout").rate == 0.25
    assert isinstance(model.get_layer("dense").kernel_initializer, keras.initializers.RandomNormal)
    out = keras.ops.convert_to_numpy(model(np.zeros((2, 32, 32, 1), np.uint8)))
    assert out.shape == (2, 1) and np.all((out >= 0) & (out <= 1))


def test_two_phase_trainable_flags() -> None:
    model = build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None, freeze_batchnorm=True)
    set_backbone_trainable(model, False)
    assert not model.get_layer("backbone").trainable
    assert model.get_layer("dense").trainable
    set_backbone_trainable(model, True, freeze_batchnorm=True)
    backbone = model.get_layer("backbone")
    assert backbone.trainable
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and not any(layer.trainable for layer in bns)
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.trainable for layer in convs)


def test_unknown_arch_and_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown arch 'vgg16'"):
        resolve_weights("vgg16", "none")
    with pytest.raises(ConfigError, match="not found"):
        resolve_weights("densenet169", str(tmp_path / "missing.h5"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("MURA_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        resolve_weights("resnet101", "imagenet")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "models" / "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    cached = tmp_path / "models" / "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights("resnet101", "imagenet") == str(cached)
    assert resolve_weights("densenet169", "none") is None


def test_zero_init_residual_makes_resnet_blocks_start_as_identity() -> None:
    def closing_gammas(model: keras.Model) -> list[np.ndarray]:
        backbone = model.get_layer("backbone")
        return [keras.ops.convert_to_numpy(layer.gamma) for layer in backbone.layers if layer.name.endswith("_3_bn")]

    zeroed = closing_gammas(
        build_model(ModelSpec("resnet101", dense_units=8, dropout=0.1), 32, "none", None, seed=0, zero_init_residual=True)
    )
    assert len(zeroed) == 3 + 4 + 23 + 3  # ResNet-101's blocks per stage
    assert all(np.all(g == 0) for g in zeroed)
    plain = build_model(ModelSpec("resnet101", dense_units=8, dropout=0.1), 32, "none", None, seed=0)
    assert all(np.all(g == 1) for g in closing_gammas(plain))
    # Other BatchNorm layers keep γ = 1, and DenseNet has no residual branch to zero.
    first = plain.get_layer("backbone").get_layer("conv2_block1_1_bn")
    assert np.all(keras.ops.convert_to_numpy(first.gamma) == 1)
    assert (
        zero_residual_gammas(
            build_model(ModelSpec("simple_cnn", dense_units=8, dropout=0.1), 32, "none", None).get_layer("backbone")
        )
        == 0
    )


def test_batchnorm_momentum_reaches_every_batchnorm_and_survives_saving(tmp_path: Path) -> None:

    model = build_model(ModelSpec("densenet169", dense_units=8, dropout=0.1), 32, "none", None, seed=0, batchnorm_momentum=0.9)
    norms = [la for la in model.get_layer("backbone").layers if isinstance(la, keras.layers.BatchNormalization)]
    norms.append(model.get_layer("head_bn"))
    assert len(norms) > 100 and {la.momentum for la in norms} == {0.9}
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert loaded.get_layer("head_bn").momentum == 0.9
    assert loaded.get_layer("backbone").get_layer("conv1_bn").momentum == 0.9

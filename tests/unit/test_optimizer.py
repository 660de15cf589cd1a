"""The project's Adam: the same updates as Keras's, in fewer traced operations, and saved and loaded with a model."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from mura.modeling.optimizer import Adam


def _trained(optimizer: keras.optimizers.Optimizer, steps: int = 3) -> keras.Model:
    """A small conv net with batch norm, trained ``steps`` full-batch steps from a fixed start."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=optimizer, loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8, 8, 1)).astype("float32"), rng.integers(0, 2, (16, 1)).astype("float32")
    model.fit(x, y, batch_size=16, epochs=steps, verbose=0, shuffle=False)
    return model


def test_updates_equal_keras_adam() -> None:
    ours = _trained(Adam(0.01))
    theirs = _trained(keras.optimizers.Adam(0.01))
    start = _trained(Adam(0.01), steps=0)
    for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, s) for a, s in zip(ours.get_weights(), start.get_weights(), strict=True))  # it trained


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the traced graph is TensorFlow's")
def test_the_traced_update_has_fewer_operations() -> None:
    import tensorflow as tf

    def traced_ops(optimizer: keras.optimizers.Optimizer) -> int:
        variables = [keras.Variable(np.ones((3, 3), "float32")) for _ in range(20)]
        optimizer.build(variables)
        step = tf.function(lambda grads: optimizer.apply(grads, variables))
        graph = step.get_concrete_function([tf.TensorSpec((3, 3), tf.float32)] * 20).graph
        return len(graph.get_operations())

    ours, theirs = traced_ops(Adam(0.01)), traced_ops(keras.optimizers.Adam(0.01))
    assert ours < 0.7 * theirs, (ours, theirs)


def test_a_model_saved_with_it_loads_with_its_state(tmp_path: Path) -> None:
    model = _trained(Adam(0.01))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer) is Adam and loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

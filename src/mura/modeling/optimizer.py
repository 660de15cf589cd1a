"""Adam with a TensorFlow update step that is cheap to trace (same update as Keras's Adam).

Keras's Adam writes its per-variable update in backend-neutral ``keras.ops``: on the
TensorFlow backend each call goes through Keras's dtype promotion and tensor conversion,
and the bias-corrected step size is rebuilt for every variable (casts, two powers, a
square root). On DenseNet-169's ~600 variables that is ~26 graph operations per variable
and ~9 s of a first training step's ~27 s of Python tracing on a 2-core CPU (profiled,
bench/RESULTS.md). :class:`Adam` computes the step size once per step and updates each
variable with TensorFlow ops directly; on any other backend (JAX on GPUs compiles the
whole step with XLA) it is Keras's Adam unchanged.
"""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["Adam"]


@keras.saving.register_keras_serializable(package="mura")
class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam``, same arguments and same arithmetic, traced in fewer TensorFlow operations.

    Per variable, as Keras's: ``m += (g - m)(1 - β1)``, ``v += (g² - v)(1 - β2)``,
    ``θ -= m·α / (√v + ε)`` with ``α = lr·√(1 - β2ᵗ) / (1 - β1ᵗ)``, computed here once per step.
    AMSGrad and sparse gradients take Keras's own path.
    """

    _step_size: Any = None  # α of the step being traced (TensorFlow backend only)

    def _backend_update_step(self, grads: list[Any], trainable_variables: list[Any], learning_rate: Any) -> None:
        if keras.backend.backend() != "tensorflow" or self.amsgrad:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        import tensorflow as tf  # the backend in use

        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.constant(self.beta_1, tf.float32), step)
        beta_2_power = tf.pow(tf.constant(self.beta_2, tf.float32), step)
        self._step_size = tf.cast(learning_rate, tf.float32) * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_size = None

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One variable's update (TensorFlow ops when :meth:`_backend_update_step` set the step size)."""
        if self._step_size is None:  # another backend (no TensorFlow there), or AMSGrad: Keras's own update
            super().update_step(gradient, variable, learning_rate)
            return
        import tensorflow as tf  # only reached with a step size, set on the TensorFlow backend

        if isinstance(gradient, tf.IndexedSlices):
            super().update_step(gradient, variable, learning_rate)
            return
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        dtype = variable.dtype
        gradient = tf.cast(gradient, dtype)
        alpha = tf.cast(self._step_size, dtype)
        m.assign_add((gradient - m) * (1 - self.beta_1))
        v.assign_add((tf.square(gradient) - v) * (1 - self.beta_2))
        variable.assign_sub((m * alpha) / (tf.sqrt(v) + self.epsilon))

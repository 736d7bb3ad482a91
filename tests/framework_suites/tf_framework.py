"""The TensorFlow backend seen through numpy, for the shared suites (imports TensorFlow and Keras).

``ptycho_tf`` carries a complex field as real parts stacked on an axis of size 2 before
the last two ([real, imag]) and lays the network's tensors out channels-last.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from tensorflow.python.framework import config as tf_config

from framework_suites.framework import Framework
from ptycho_core.architecture import C_OUTER
from ptycho_core.config import ModelConfig
from ptycho_tf import model, persistence, physics, training
from ptycho_tf._keras import keras, tf
from ptycho_tf.backend import TensorFlowBackend

__all__ = ["TENSORFLOW", "TensorFlowFramework", "complex_of", "parts_of"]


def parts_of(z: np.ndarray) -> np.ndarray:
    """complex (..., H, W) → float32 (..., 2, H, W) [real, imag]."""
    return np.stack([z.real, z.imag], axis=-3).astype(np.float32)


def complex_of(parts: Any) -> np.ndarray:
    """float (..., 2, H, W) [real, imag] → complex64 (..., H, W)."""
    parts = np.asarray(parts)
    return (parts[..., 0, :, :] + 1j * parts[..., 1, :, :]).astype(np.complex64)


class _StepRates(keras.callbacks.Callback):
    """The rate of every optimiser step, read from the optimiser right after the step."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []
        self.steps: list[int] = []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer.learning_rate.numpy()))
        self.steps.append(int(optimizer.iterations.numpy()) - 1)


class TensorFlowFramework(Framework):
    name = "tensorflow"
    other = "pytorch"
    physics = physics
    training = training
    model = model
    persistence = persistence
    bundle_frameworks = ("tensorflow", "keras")
    kernel = "kernel"
    probe_weights = ("probe.real", "probe.imag")
    rate_rtol = 1e-7  # the rate is a float32 variable of the optimiser

    def backend(self) -> TensorFlowBackend:
        return TensorFlowBackend()

    # -- physics ------------------------------------------------------------------------------

    def translate(self, images, dx, dy):
        shifts = (tf.constant(np.asarray(v, np.float32)) for v in (dx, dy))
        return physics.translate(images, *shifts).numpy()

    def extract_patches(self, canvas, offsets, N):
        return complex_of(physics.extract_patches(parts_of(canvas), offsets, N))

    def merge_patches(self, patches, offsets, P):
        return complex_of(physics.merge_patches(parts_of(patches), offsets, P))

    def diffract(self, field):
        return physics.diffract(tf.constant(field)).numpy()

    def illuminate_and_diffract(self, patches, probe):
        return physics.diffract(physics.illuminate(parts_of(patches), parts_of(probe))).numpy()

    def poisson_nll(self, predicted, target):
        return float(tf.reduce_mean(physics.poisson_nll(predicted, target)))

    def mae_loss(self, predicted, target):
        return float(tf.reduce_mean(physics.mae_loss(predicted, target)))

    def poisson_deviance(self, predicted, target):
        return float(physics.poisson_deviance(predicted, target))

    def supervised_loss(self, amplitude, phase, target):
        return float(physics.supervised_loss(amplitude, phase, tf.constant(target)))

    def gaussian_smooth(self, field, sigma):
        if np.iscomplexobj(field):
            return complex_of(physics.gaussian_smooth(parts_of(field), sigma))
        return np.asarray(physics.gaussian_smooth(tf.constant(field), sigma))

    def effective_probe(self, probe, mask=None):
        mask = None if mask is None else tf.constant(mask)
        return complex_of(physics.effective_probe(parts_of(probe), mask=mask))

    # -- the network --------------------------------------------------------------------------

    def build_network(
        self, config: ModelConfig, probe, intensity_scale, *, seed=0, **kwargs
    ) -> model.PtychoPINN:
        return training.build_network(config, probe, intensity_scale, seed=seed, **kwargs)

    def set_log_gain(self, network, value):
        network.log_gain.assign(value)

    def amplitude(self, network, x, coords):
        return network.diffraction_amplitude(x, coords).numpy()

    def predict_object(self, network, x, coords):
        return network.predict_object(x, coords).numpy()

    def generate(self, network, x):
        amp, phase = network.generate(x)
        return amp.numpy(), phase.numpy()

    def amplitude_head(self, network, x):
        decoder = network.decoder_amp
        features = network.encoder(x)
        for block in decoder.blocks:
            features = block(features)
        return decoder.head(features[..., :-C_OUTER]).numpy()

    def activate(self, name, values):
        return model.get_activation(name)(tf.constant(values)).numpy()

    def offsets(self, network, coords):
        return network.offsets(coords).numpy()

    def illuminating_probe(self, network):
        return complex_of(network.illuminating_probe())

    def network_probe(self, network):
        return network.probe_array()

    def weights(self, network):
        return {name: np.array(v.numpy()) for name, v in network.named_weights().items()}

    def conv_shape(self, c_in, c_out):
        return (3, 3, c_in, c_out)

    def count(self, *layers):
        return sum(int(np.prod(v.shape)) for layer in layers for v in layer.trainable_weights)

    def trainable_parameters(self, network):
        return network.trainable_parameters()

    def add_to_weights(self, layer, delta):
        for v in layer.weights:
            v.assign(v + delta)

    # -- training -----------------------------------------------------------------------------

    def step_rate_recorder(self) -> _StepRates:
        return _StepRates()

    def framework_state(self) -> tuple:
        return (
            random.getstate(),
            tf_config.is_op_determinism_enabled(),
            keras.config.dtype_policy().name,
        )


TENSORFLOW = TensorFlowFramework()

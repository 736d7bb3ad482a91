"""The Keras generator's architecture: the shared model suite, and what only Keras has."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import import_path_env, run_python
from framework_suites.model import ModelSuite, random_batch
from framework_suites.tf_framework import TENSORFLOW

from ptycho_core.config import ModelConfig
from ptycho_tf._keras import keras, tf
from ptycho_tf.model import Decoder, PtychoPINN


class TestModel(ModelSuite):
    """The shared model suite (framework_suites/model.py) on TensorFlow."""


def _network(config: ModelConfig, **kwargs) -> PtychoPINN:
    probe = np.ones((config.N, config.N), dtype=np.complex64)
    return TENSORFLOW.build_network(config, probe, 988.0, **kwargs)


def test_every_variable_has_one_neutral_name() -> None:
    network = _network(ModelConfig(N=64, gridsize=2, n_filters_scale=2))
    named = network.named_weights()
    assert {id(v) for v in named.values()} == {id(v) for v in network.weights}
    assert len(named) == len(network.weights)


def test_supervised_call_returns_amplitude_and_phase() -> None:
    network = _network(ModelConfig(N=64, gridsize=2, model_type="supervised"))
    x, coords = random_batch(2, 64, 4)
    out = network((x, coords))
    assert out.shape == (2, 64, 64, 8)
    amp, phase = network.generate(x)
    np.testing.assert_array_equal(out, np.concatenate([amp, phase], axis=-1))


def test_layers_are_registered_serialisable_keras_classes() -> None:
    decoder = Decoder(64, 2, 4, "pi_tanh", name="decoder_phase")
    data = keras.saving.serialize_keras_object(decoder)
    assert data["registered_name"] == "ptycho>Decoder"
    clone = keras.saving.deserialize_keras_object(data)
    assert isinstance(clone, Decoder) and clone.get_config() == decoder.get_config()
    network = _network(ModelConfig(N=64, gridsize=2), seed=9)
    rebuilt = PtychoPINN.from_config(network.get_config())
    rebuilt.build()
    assert rebuilt.model_config == network.model_config and rebuilt.seed == 9
    np.testing.assert_array_equal(rebuilt.probe_array(), network.probe_array())
    name = "encoder.blocks.0.conv0.kernel"
    np.testing.assert_array_equal(
        rebuilt.named_weights()[name].numpy(), network.named_weights()[name].numpy()
    )


def test_bfloat16_policy_is_scoped_to_the_model() -> None:
    global_policy = keras.config.dtype_policy().name
    network = _network(ModelConfig(N=64), precision="bf16-mixed")
    conv = network.encoder.blocks[0].conv0
    assert conv.compute_dtype == "bfloat16" and conv.kernel.dtype == "float32"
    assert network.dtype_policy.name == "float32"
    assert keras.config.dtype_policy().name == global_policy == "float32"
    x, coords = random_batch(2, 64, 1)
    amplitude = network((x, coords))
    assert amplitude.dtype == tf.float32  # the physics stays float32
    reference = _network(ModelConfig(N=64))
    for mine, theirs in zip(reference.weights, network.weights, strict=True):
        mine.assign(theirs)
    np.testing.assert_allclose(
        amplitude, reference((x, coords)), rtol=0.1, atol=0.05 * float(tf.reduce_max(amplitude))
    )


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_keras_on_another_framework_is_refused(framework: str) -> None:
    """A stray KERAS_BACKEND must fail loudly, whether Keras then imports or not."""
    if framework == "torch":
        pytest.importorskip("torch")  # Keras on torch imports only where torch is installed
    env = {**import_path_env(), "KERAS_BACKEND": framework}
    done = run_python("-c", "import ptycho_tf.backend", env=env)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ptycho_core.errors.BackendUnavailableError: the TensorFlow backend of ptycho needs "
        "Keras 3 running on TensorFlow"
    )
    assert repr(framework) in last and "unset KERAS_BACKEND" in last

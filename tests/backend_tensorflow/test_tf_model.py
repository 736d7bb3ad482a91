"""The Keras generator's architecture: parameter counts, naming, activations, output regions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers_tf import random_batch, subprocess_env

from ptycho_core.architecture import C_OUTER, GENERATOR_PARAMETERS
from ptycho_core.config import ModelConfig
from ptycho_tf._keras import keras, tf
from ptycho_tf.model import (
    AMP_ACTIVATIONS,
    Decoder,
    PtychoPINN,
    get_activation,
)
from ptycho_tf.training import build_network


def _network(config: ModelConfig, **kwargs) -> PtychoPINN:
    probe = np.ones((config.N, config.N), dtype=np.complex64)
    return build_network(config, probe, 988.0, **kwargs)


def _count(layer) -> int:
    return sum(int(np.prod(v.shape)) for v in layer.trainable_weights)


@pytest.mark.parametrize(("N", "gridsize"), sorted(GENERATOR_PARAMETERS))
def test_parameter_counts_match_the_table(N: int, gridsize: int) -> None:
    network = _network(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=2))
    expected = GENERATOR_PARAMETERS[(N, gridsize)]
    assert network.generator_parameters() == expected
    assert network.trainable_parameters() == expected + 1  # the output gain comes on top
    frozen = _network(
        ModelConfig(N=N, gridsize=gridsize, n_filters_scale=2), intensity_scale_trainable=False
    )
    assert frozen.trainable_parameters() == expected


def test_final_stage_split_of_the_n64_generator() -> None:
    """§3 (n_filters_scale 2): encoder 1,144,256; decoder base 553,344; final stage 541 + 39,873."""
    network = _network(ModelConfig(N=64, gridsize=1, n_filters_scale=2))
    assert _count(network.encoder) == 1_144_256
    assert sum(_count(block) for block in network.decoder_amp.blocks) == 553_344
    assert _count(network.decoder_amp.head) == 541
    assert _count(network.decoder_amp.outer) == 39_873
    assert _count(network.decoder_phase) == _count(network.decoder_amp)


def test_weight_names_form_the_documented_hierarchy() -> None:
    network = _network(ModelConfig(N=64, gridsize=2, n_filters_scale=2))
    named = network.named_weights()
    assert {id(v) for v in named.values()} == {id(v) for v in network.weights}  # every variable
    assert len(named) == len(network.weights)
    for name in (
        "encoder.blocks.0.conv0.kernel",
        "encoder.blocks.2.conv1.bias",
        "decoder_amp.blocks.1.conv0.kernel",
        "decoder_amp.head.kernel",
        "decoder_amp.outer.up.conv1.kernel",
        "decoder_amp.outer.head.bias",
        "decoder_phase.outer.head.kernel",
        "log_gain",
        "probe.real",
        "probe.imag",
    ):
        assert name in named, name
    roots = {name.split(".")[0] for name in named}
    assert roots == {"encoder", "decoder_amp", "decoder_phase", "log_gain", "probe"}
    assert tuple(named["encoder.blocks.0.conv0.kernel"].shape) == (3, 3, 4, 64)  # HWIO, all C in
    assert tuple(named["decoder_amp.head.kernel"].shape) == (3, 3, 60, 4)  # 32n − 4 in, C heads
    assert tuple(named["log_gain"].shape) == ()
    flat = _network(ModelConfig(N=64, pad_object=False, n_filters_scale=2)).named_weights()
    assert "decoder_amp.up.conv0.kernel" in flat and "decoder_amp.outer.head.kernel" not in flat
    assert tuple(flat["decoder_amp.up.conv0.kernel"].shape) == (3, 3, 64, 64)


def test_initial_weights_depend_only_on_the_seed() -> None:
    a = _network(ModelConfig(N=64), seed=5).named_weights()
    b = _network(ModelConfig(N=64), seed=5).named_weights()
    c = _network(ModelConfig(N=64), seed=6).named_weights()
    name = "decoder_phase.blocks.1.conv1.kernel"
    assert np.array_equal(a[name].numpy(), b[name].numpy())
    assert not np.array_equal(a[name].numpy(), c[name].numpy())
    # distinct convolutions get distinct initial kernels (no shared seed)
    assert not np.array_equal(
        a["encoder.blocks.1.conv0.kernel"].numpy()[..., :64],
        a["encoder.blocks.1.conv1.kernel"].numpy()[:, :, :64, :64],
    )


def test_activation_table_and_alias() -> None:
    assert set(AMP_ACTIVATIONS) == {"sigmoid", "swish", "softplus", "relu"}
    assert get_activation("silu") is get_activation("swish")
    with pytest.raises(
        ValueError, match=r"amp_activation: expected one of .*sigmoid.*found 'tanh'"
    ):
        get_activation("tanh")
    x = tf.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(get_activation("swish")(x), x * tf.sigmoid(x), atol=1e-6)


@pytest.mark.parametrize("activation", sorted(AMP_ACTIVATIONS))
def test_amplitude_activation_is_applied(activation: str) -> None:
    network = _network(ModelConfig(N=64, amp_activation=activation, probe_big=False))
    x, _ = random_batch(2, 64, 1)
    amp, phase = network.generate(x)
    features = network.encoder(x)
    for block in network.decoder_amp.blocks:
        features = block(features)
    raw = network.decoder_amp.head(features[..., :-C_OUTER])
    centre = amp[:, 16:48, 16:48]
    np.testing.assert_allclose(centre, AMP_ACTIVATIONS[activation](raw), atol=1e-6)
    assert float(tf.reduce_max(tf.abs(phase))) < np.pi


def test_object_lives_in_the_central_box_and_path_two_outside() -> None:
    """Path 1 fills only the central N/2 box; the masked path 2 only the border."""
    network = _network(ModelConfig(N=64))
    x, _ = random_batch(2, 64, 1)
    before, _ = network.generate(x)
    for v in network.decoder_amp.outer.weights:
        v.assign(v + 0.5)
    after, _ = network.generate(x)
    for v in network.decoder_amp.head.weights:
        v.assign(v + 0.5)
    head_changed, _ = network.generate(x)
    inside = np.zeros((64, 64), dtype=bool)
    inside[16:48, 16:48] = True
    before, after, head_changed = (np.asarray(t)[..., 0] for t in (before, after, head_changed))
    assert np.array_equal(before[:, inside], after[:, inside])
    assert not np.array_equal(before[:, ~inside], after[:, ~inside])
    assert np.array_equal(after[:, ~inside], head_changed[:, ~inside])
    assert not np.array_equal(after[:, inside], head_changed[:, inside])


def test_without_probe_big_the_border_is_zero() -> None:
    network = _network(ModelConfig(N=64, probe_big=False))
    amp, phase = network.generate(random_batch(1, 64, 1)[0])
    assert float(tf.reduce_max(tf.abs(amp[:, :16]))) == 0.0
    assert float(tf.reduce_max(tf.abs(phase[:, :, 48:]))) == 0.0
    assert network.decoder_amp.outer is None


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(N=64, gridsize=2),
        ModelConfig(N=64, gridsize=2, object_big=False),
        ModelConfig(N=64, pad_object=False, probe_mask=True, gaussian_smoothing_sigma=0.8),
        ModelConfig(N=128, gridsize=1, amp_activation="softplus"),
    ],
    ids=["gs2", "gs2-small-object", "flat-masked-smoothed", "n128"],
)
def test_forward_shapes_and_finite_outputs(config: ModelConfig) -> None:
    network = _network(config)
    x, coords = random_batch(3, config.N, config.channels, seed=1)
    amplitude = network((x, coords))
    assert amplitude.shape == (3, config.N, config.N, config.channels)
    assert amplitude.dtype == tf.float32 and bool(tf.reduce_all(amplitude >= 0))
    obj = network.predict_object(x, coords)
    assert obj.shape == (3, config.N, config.N, 1) and obj.dtype == tf.complex64
    assert np.all(np.isfinite(obj.numpy().view(np.float32)))


def test_supervised_call_returns_amplitude_and_phase() -> None:
    network = _network(ModelConfig(N=64, gridsize=2, model_type="supervised"))
    x, coords = random_batch(2, 64, 4)
    out = network((x, coords))
    assert out.shape == (2, 64, 64, 8)
    amp, phase = network.generate(x)
    np.testing.assert_array_equal(out, np.concatenate([amp, phase], axis=-1))
    with pytest.raises(ValueError, match="object_big: expected True"):
        _network(ModelConfig(N=64, gridsize=2, model_type="supervised", object_big=False))


def test_gain_scales_the_predicted_amplitude() -> None:
    network = _network(ModelConfig(N=64))
    x, coords = random_batch(2, 64, 1)
    base = network((x, coords)).numpy()
    network.log_gain.assign(np.log(2.0))
    np.testing.assert_allclose(network((x, coords)).numpy(), 2.0 * base, rtol=1e-5)
    assert network.output_gain == pytest.approx(2.0)


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


def test_importing_ptycho_tf_imports_no_framework() -> None:
    code = (
        "import sys, ptycho_tf\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(ptycho_tf.BACKEND.name, ptycho_tf.BACKEND.target)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["tensorflow", "ptycho_tf.backend:TensorFlowBackend"]


@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_keras_on_another_framework_is_refused(framework: str) -> None:
    """A stray KERAS_BACKEND must fail loudly, whether Keras then imports or not."""
    if framework == "torch":
        pytest.importorskip("torch")  # Keras on torch imports only where torch is installed
    env = subprocess_env()
    env["KERAS_BACKEND"] = framework
    done = subprocess.run(
        [sys.executable, "-c", "import ptycho_tf.backend"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "ptycho_core.errors.BackendUnavailableError: the TensorFlow backend of ptycho needs "
        "Keras 3 running on TensorFlow"
    )
    assert repr(framework) in last and "unset KERAS_BACKEND" in last

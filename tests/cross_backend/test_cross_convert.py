"""Converted weights compute the same function in the other framework, both directions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from framework_suites.framework import Framework
from framework_suites.model import random_batch
from framework_suites.tf_framework import TENSORFLOW as TENSORFLOW_FW
from framework_suites.torch_framework import TORCH as TORCH_FW

from ptycho_core.bundle import read_manifest
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.convert import ConversionError, convert_bundle, convert_model
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.physics import focused_probe, normalize_probe
from ptycho_core.protocol import TrainedModel
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_inference_data, prepare_training_data
from ptycho_tf.backend import TensorFlowBackend
from ptycho_torch.backend import TorchBackend

TF, TORCH = TensorFlowBackend(), TorchBackend()
S0 = 988.0
CONFIGS = {
    "gs1": ModelConfig(N=64, gridsize=1),
    "gs2": ModelConfig(N=64, gridsize=2),
    "flat-softplus-masked": ModelConfig(
        N=64,
        pad_object=False,
        amp_activation="softplus",
        probe_mask=True,
        gaussian_smoothing_sigma=0.7,
    ),
}


def _probe(N: int = 64) -> np.ndarray:
    return normalize_probe(focused_probe(N), 4.0)


def _model(fw: Framework, model: ModelConfig, log_gain: float, **config) -> TrainedModel:
    """An untrained model of ``fw`` with a trained-looking gain, so the gain is compared too."""
    training = TrainingConfig(model=model, backend=fw.name, **config)
    network = fw.build_network(
        model, _probe(model.N), S0, probe_trainable=training.probe_trainable, seed=3
    )
    fw.set_log_gain(network, log_gain)
    return TrainedModel(
        backend=fw.name, config=training, probe=_probe(model.N), intensity_scale=S0, network=network
    )


def _batch(model: ModelConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return random_batch(4, model.N, model.channels, seed=seed)


def _assert_same_object(found: np.ndarray, expected: np.ndarray) -> None:
    """float32 agreement: 1e-4 of the largest value (the two frameworks sum in other orders)."""
    assert found.dtype == expected.dtype == np.complex64 and found.shape == expected.shape
    np.testing.assert_allclose(
        found, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max())
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tensorflow_weights_run_in_torch(name: str) -> None:
    source = _model(TENSORFLOW_FW, CONFIGS[name], 0.3)
    converted = convert_model(source, TF, TORCH)
    assert converted.backend == "pytorch" and converted.config.backend == "pytorch"
    assert converted.extra["output_gain"] == pytest.approx(np.exp(0.3), rel=1e-6)
    x, coords = _batch(CONFIGS[name], seed=0)
    _assert_same_object(
        TORCH.forward(converted, x, coords, accelerator="cpu"),
        TF.forward(source, x, coords, accelerator="cpu"),
    )
    expected = TENSORFLOW_FW.amplitude(
        source.network, x, coords
    )  # the training path: physics and gain too
    np.testing.assert_allclose(
        TORCH_FW.amplitude(converted.network, x, coords),
        expected,
        rtol=1e-4,
        atol=1e-4 * expected.max(),
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_weights_run_in_tensorflow(name: str) -> None:
    source = _model(TORCH_FW, CONFIGS[name], -0.2)
    converted = convert_model(source, TORCH, TF)
    assert converted.backend == "tensorflow"
    x, coords = _batch(CONFIGS[name], seed=1)
    _assert_same_object(
        TF.forward(converted, x, coords, accelerator="cpu"),
        TORCH.forward(source, x, coords, accelerator="cpu"),
    )
    expected = TORCH_FW.amplitude(source.network, x, coords)
    np.testing.assert_allclose(
        TENSORFLOW_FW.amplitude(converted.network, x, coords),
        expected,
        rtol=1e-4,
        atol=1e-4 * expected.max(),
    )


def test_trainable_probe_converts_both_ways() -> None:
    source = _model(TORCH_FW, CONFIGS["gs1"], -0.2, probe_trainable=True)
    with torch.no_grad():
        source.network.probe.mul_(torch.tensor(0.9 + 0.1j, dtype=torch.complex64))
    there = convert_model(source, TORCH, TF)
    np.testing.assert_allclose(there.probe, source.network.probe.detach().numpy(), atol=1e-7)
    back = convert_model(there, TF, TORCH)
    np.testing.assert_array_equal(
        back.network.probe.detach().numpy(), source.network.probe.detach().numpy()
    )
    x, coords = _batch(CONFIGS["gs1"], seed=2)
    expected = TORCH_FW.amplitude(source.network, x, coords)
    np.testing.assert_allclose(
        TENSORFLOW_FW.amplitude(there.network, x, coords),
        expected,
        rtol=1e-4,
        atol=1e-4 * expected.max(),
    )


def test_mismatched_architectures_name_the_array() -> None:
    source = _model(TENSORFLOW_FW, CONFIGS["gs1"], 0.3)
    other = TrainedModel(
        backend="tensorflow",
        config=source.config.replace(model=ModelConfig(N=64, probe_big=False)),
        probe=source.probe,
        intensity_scale=S0,
        network=source.network,
    )
    with pytest.raises(
        ConversionError,
        match=r"backend 'pytorch' cannot import the weights of backend 'tensorflow': import_arrays: array 'decoder_amp.outer.head.bias' does not belong",
    ):
        convert_model(other, TF, TORCH)
    wrong_width = other.config.replace(model=ModelConfig(N=64, n_filters_scale=2))
    arrays = TF.export_arrays(source)
    with pytest.raises(
        ValueError,
        match=r"array 'encoder.blocks.0.conv0.kernel': expected shape \(3, 3, 1, 64\), found \(3, 3, 1, 32\)",
    ):
        TORCH.import_arrays(arrays, config=wrong_width, probe=source.probe, intensity_scale=S0)


def test_convert_bundles_both_ways_after_training(tmp_path: Path) -> None:
    """A trained bundle converted torch → tf → torch: same predictions on the same groups."""
    config = TORCH_FW.small_config()
    hooks = make_plugin_manager(load_entry_points=False).hook
    trained = TORCH.train(
        prepare_training_data(default_dataset("train", n_positions=64), config), config, hooks=hooks
    )
    TORCH.save(trained, tmp_path / "torch.ptycho")
    as_tf = convert_bundle(
        tmp_path / "torch.ptycho", TF, tmp_path / "tf.ptycho", source_backend=TORCH
    )
    as_torch = convert_bundle(
        tmp_path / "tf.ptycho", TORCH, tmp_path / "back.ptycho", source_backend=TF
    )
    manifest = read_manifest(tmp_path / "tf.ptycho")
    assert (
        manifest["backend"] == "tensorflow"
        and manifest["history"] == read_manifest(tmp_path / "torch.ptycho")["history"]
    )
    assert manifest["config"]["backend"] == "tensorflow" and manifest["config"]["seed"] == 3
    assert manifest["extra"]["output_gain"] == pytest.approx(trained.extra["output_gain"], rel=1e-6)

    groups = prepare_inference_data(
        default_dataset("test", n_positions=32), trained, InferenceConfig()
    )
    quiet = make_plugin_manager(load_entry_points=False).hook
    inference = InferenceConfig(batch_size=16, accelerator="cpu")
    reference = TORCH.infer(trained, groups, inference, hooks=quiet)
    _assert_same_object(
        TF.infer(TF.load(tmp_path / "tf.ptycho"), groups, inference, hooks=quiet), reference
    )
    _assert_same_object(TF.infer(as_tf, groups, inference, hooks=quiet), reference)
    back = TORCH.load(tmp_path / "back.ptycho")
    for name, tensor in trained.network.state_dict().items():  # exact round trip of every tensor
        assert torch.equal(back.network.state_dict()[name], tensor), name
    assert np.array_equal(TORCH.infer(as_torch, groups, inference, hooks=quiet), reference)

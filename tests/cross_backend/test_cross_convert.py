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


def _assert_same_amplitude(found: np.ndarray, expected: np.ndarray) -> None:
    """The training path agrees too: physics and gain."""
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * expected.max())


DIRECTIONS = {  # source, target, the source's log gain
    "tensorflow-to-pytorch": (TENSORFLOW_FW, TORCH_FW, 0.3),
    "pytorch-to-tensorflow": (TORCH_FW, TENSORFLOW_FW, -0.2),
}


@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_converted_weights_compute_the_same_function(direction: str, name: str) -> None:
    source_fw, target_fw, log_gain = DIRECTIONS[direction]
    source_backend, target_backend = source_fw.backend(), target_fw.backend()
    source = _model(source_fw, CONFIGS[name], log_gain)
    converted = convert_model(source, source_backend, target_backend)
    assert converted.backend == converted.config.backend == target_fw.name
    assert converted.extra["output_gain"] == pytest.approx(np.exp(log_gain), rel=1e-6)
    x, coords = _batch(CONFIGS[name], seed=0)
    _assert_same_object(
        target_backend.forward(converted, x, coords, accelerator="cpu"),
        source_backend.forward(source, x, coords, accelerator="cpu"),
    )
    _assert_same_amplitude(
        target_fw.amplitude(converted.network, x, coords),
        source_fw.amplitude(source.network, x, coords),
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
    _assert_same_amplitude(
        TENSORFLOW_FW.amplitude(there.network, x, coords),
        TORCH_FW.amplitude(source.network, x, coords),
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

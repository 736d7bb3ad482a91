"""Converted weights compute the same function in the other framework, both directions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptycho_core.bundle import read_manifest
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.convert import ConversionError, convert_bundle, convert_model
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.physics import focused_probe, normalize_probe
from ptycho_core.protocol import TrainedModel
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_inference_data, prepare_training_data
from ptycho_tf.backend import TensorFlowBackend
from ptycho_tf.training import build_network as build_tf
from ptycho_torch.backend import TorchBackend
from ptycho_torch.training import build_network as build_torch

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


def _tf_model(model: ModelConfig, seed: int = 3, **config) -> TrainedModel:
    training = TrainingConfig(model=model, backend="tensorflow", **config)
    network = build_tf(
        model, _probe(model.N), S0, probe_trainable=training.probe_trainable, seed=seed
    )
    network.log_gain.assign(0.3)  # a trained-looking gain, so the gain is compared too
    return TrainedModel(
        backend="tensorflow",
        config=training,
        probe=_probe(model.N),
        intensity_scale=S0,
        network=network,
    )


def _torch_model(model: ModelConfig, seed: int = 3, **config) -> TrainedModel:
    training = TrainingConfig(model=model, backend="pytorch", **config)
    torch.manual_seed(seed)
    network = build_torch(model, _probe(model.N), S0, probe_trainable=training.probe_trainable)
    with torch.no_grad():
        network.log_gain.fill_(-0.2)
    return TrainedModel(
        backend="pytorch",
        config=training,
        probe=_probe(model.N),
        intensity_scale=S0,
        network=network,
    )


def _batch(model: ModelConfig, B: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    C = model.channels
    x = rng.random((B, model.N, model.N, C), dtype=np.float32)
    coords = ((rng.random((B, 1, 2, C)) - 0.5) * (8.0 if C > 1 else 0.0)).astype(np.float32)
    return x, coords


def _assert_same_object(found: np.ndarray, expected: np.ndarray) -> None:
    """float32 agreement: 1e-4 of the largest value (the two frameworks sum in other orders)."""
    assert found.dtype == expected.dtype == np.complex64 and found.shape == expected.shape
    np.testing.assert_allclose(
        found, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max())
    )


def _tf_amplitude(model: TrainedModel, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return model.network((x, coords)).numpy()


def _torch_amplitude(model: TrainedModel, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.network(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(coords))
    return out.amplitude.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tensorflow_weights_run_in_torch(name: str) -> None:
    source = _tf_model(CONFIGS[name])
    converted = convert_model(source, TF, TORCH)
    assert converted.backend == "pytorch" and converted.config.backend == "pytorch"
    assert converted.extra["output_gain"] == pytest.approx(np.exp(0.3), rel=1e-6)
    x, coords = _batch(CONFIGS[name])
    _assert_same_object(
        TORCH.forward(converted, x, coords, accelerator="cpu"),
        TF.forward(source, x, coords, accelerator="cpu"),
    )
    expected = _tf_amplitude(source, x, coords)  # the training path: physics and gain too
    np.testing.assert_allclose(
        _torch_amplitude(converted, x, coords), expected, rtol=1e-4, atol=1e-4 * expected.max()
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_weights_run_in_tensorflow(name: str) -> None:
    source = _torch_model(CONFIGS[name])
    converted = convert_model(source, TORCH, TF)
    assert converted.backend == "tensorflow"
    x, coords = _batch(CONFIGS[name], seed=1)
    _assert_same_object(
        TF.forward(converted, x, coords, accelerator="cpu"),
        TORCH.forward(source, x, coords, accelerator="cpu"),
    )
    expected = _torch_amplitude(source, x, coords)
    np.testing.assert_allclose(
        _tf_amplitude(converted, x, coords), expected, rtol=1e-4, atol=1e-4 * expected.max()
    )


def test_trainable_probe_converts_both_ways() -> None:
    source = _torch_model(CONFIGS["gs1"], probe_trainable=True)
    with torch.no_grad():
        source.network.probe.mul_(torch.tensor(0.9 + 0.1j, dtype=torch.complex64))
    there = convert_model(source, TORCH, TF)
    np.testing.assert_allclose(there.probe, source.network.probe.detach().numpy(), atol=1e-7)
    back = convert_model(there, TF, TORCH)
    np.testing.assert_array_equal(
        back.network.probe.detach().numpy(), source.network.probe.detach().numpy()
    )
    x, coords = _batch(CONFIGS["gs1"], seed=2)
    expected = _torch_amplitude(source, x, coords)
    np.testing.assert_allclose(
        _tf_amplitude(there, x, coords), expected, rtol=1e-4, atol=1e-4 * expected.max()
    )


def test_mismatched_architectures_name_the_array() -> None:
    source = _tf_model(CONFIGS["gs1"])
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
    config = TrainingConfig(
        model=ModelConfig(N=64),
        backend="pytorch",
        nepochs=1,
        batch_size=16,
        n_groups=32,
        validation_split=0.25,
        accelerator="cpu",
        seed=3,
    )
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

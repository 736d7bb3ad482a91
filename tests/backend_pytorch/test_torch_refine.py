"""Warm start: refining a trained model on the very data it is about to reconstruct."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from helpers_torch import Recorder, hooks_for

from ptycho_core.data import PtychoData
from ptycho_core.errors import BackendMismatchError
from ptycho_core.physics import poisson_nll
from ptycho_core.protocol import SupportsWarmStart, TrainedModel, TrainingData
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data, refine_model, refinement_config
from ptycho_torch.backend import TorchBackend


@pytest.fixture(scope="module")
def target() -> PtychoData:
    """A small scan of another object than the one the model was trained on."""
    return default_dataset("test", N=64, n_positions=24)


def physics_loss(model: TrainedModel, data: PtychoData) -> float:
    """The Poisson NLL of ``model``'s predicted amplitudes on every pattern of ``data``."""
    prepared = prepare_training_data(data, refinement_config(model, 1), probe=model.probe)
    x = torch.from_numpy(prepared.groups.diffraction).permute(0, 3, 1, 2)
    coords = torch.from_numpy(prepared.groups.coords_relative)
    with torch.inference_mode():
        amplitude = model.network(x, coords).amplitude.double().numpy()
    target = prepared.intensity_scale * x.double().numpy()
    return poisson_nll(amplitude**2, target**2)


def test_refinement_lowers_the_loss_on_the_target_data_and_keeps_the_input(
    small_model: TrainedModel, target: PtychoData
) -> None:
    assert isinstance(TorchBackend(), SupportsWarmStart)
    weights = {name: t.clone() for name, t in small_model.network.state_dict().items()}
    history = {k: list(v) for k, v in small_model.history.items()}
    before = physics_loss(small_model, target)
    recorder = Recorder()
    # a fine-tuning rate: a fresh Adam at the training rate first kicks a barely trained model
    config = refinement_config(small_model, 2).replace(learning_rate=3e-4)
    refined = refine_model(small_model, target, epochs=2, config=config, hooks=hooks_for(recorder))

    assert physics_loss(refined, target) < before
    assert refined.network is not small_model.network
    assert refined.config == config
    assert refined.config.model == small_model.config.model
    (start,) = recorder.named("train_start")
    assert start["n_groups"] == target.n_positions  # every pattern, no validation split
    assert [e["epoch"] for e in recorder.named("epoch_end")] == [0, 1]
    assert recorder.named("train_end")[0]["history"] == refined.history
    assert refined.extra["output_gain"] == refined.network.output_gain
    np.testing.assert_array_equal(refined.probe, small_model.probe)
    # the input model is unchanged: weights, gain, probe and history
    for name, tensor in small_model.network.state_dict().items():
        assert torch.equal(tensor, weights[name]), name
    assert small_model.history == history
    # and the refinement did change the weights
    kernel = refined.network.state_dict()["encoder.blocks.0.conv0.weight"]
    assert not torch.equal(kernel, weights["encoder.blocks.0.conv0.weight"])


def test_refinement_refuses_another_architecture_or_backend(
    small_model: TrainedModel, small_training: TrainingData
) -> None:
    config = small_model.config
    wider = config.replace(model=config.model.replace(n_filters_scale=3))
    with pytest.raises(ValueError, match=r"n_filters_scale: 3 in the config, 1 in the model"):
        TorchBackend().train_from(small_model, small_training, wider, hooks=hooks_for())
    foreign = dataclasses.replace(small_model, backend="tensorflow")
    with pytest.raises(BackendMismatchError, match="'tensorflow'"):
        TorchBackend().train_from(foreign, small_training, config, hooks=hooks_for())

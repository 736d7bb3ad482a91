"""Warm start: refining a trained model on the very data it is about to reconstruct."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from helpers_tf import Recorder, hooks_for, small_config

from ptycho_core.data import PtychoData
from ptycho_core.errors import BackendMismatchError
from ptycho_core.physics import poisson_nll
from ptycho_core.protocol import SupportsWarmStart, TrainedModel, TrainingData
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data, refine_model, refinement_config
from ptycho_tf.backend import TensorFlowBackend


@pytest.fixture(scope="module")
def training() -> TrainingData:
    return prepare_training_data(default_dataset("train", N=64, n_positions=96), small_config())


@pytest.fixture(scope="module")
def model(training: TrainingData) -> TrainedModel:
    """A one-epoch model of the training object."""
    return TensorFlowBackend().train(training, small_config(), hooks=hooks_for())


@pytest.fixture(scope="module")
def target() -> PtychoData:
    """A small scan of another object than the one the model was trained on."""
    return default_dataset("test", N=64, n_positions=24)


def physics_loss(model: TrainedModel, data: PtychoData) -> float:
    """The Poisson NLL of ``model``'s predicted amplitudes on every pattern of ``data``."""
    prepared = prepare_training_data(data, refinement_config(model, 1), probe=model.probe)
    groups = prepared.groups
    amplitude = model.network((groups.diffraction, groups.coords_relative)).numpy()
    target = prepared.intensity_scale * groups.diffraction.astype(np.float64)
    return poisson_nll(amplitude.astype(np.float64) ** 2, target**2)


def test_refinement_lowers_the_loss_on_the_target_data_and_keeps_the_input(
    model: TrainedModel, target: PtychoData
) -> None:
    assert isinstance(TensorFlowBackend(), SupportsWarmStart)
    weights = {name: v.numpy().copy() for name, v in model.network.named_weights().items()}
    history = {k: list(v) for k, v in model.history.items()}
    before = physics_loss(model, target)
    recorder = Recorder()
    # a fine-tuning rate: a fresh Adam at the training rate first kicks a barely trained model
    config = refinement_config(model, 2).replace(learning_rate=3e-4)
    refined = refine_model(model, target, epochs=2, config=config, hooks=hooks_for(recorder))

    assert physics_loss(refined, target) < before
    assert refined.network is not model.network
    assert refined.config == config
    (start,) = recorder.named("train_start")
    assert start["n_groups"] == target.n_positions  # every pattern, no validation split
    assert [e["epoch"] for e in recorder.named("epoch_end")] == [0, 1]
    assert recorder.named("train_end")[0]["history"] == refined.history
    assert refined.extra["output_gain"] == refined.network.output_gain
    np.testing.assert_array_equal(refined.probe, model.probe)
    # the input model is unchanged: weights, gain, probe and history
    for name, variable in model.network.named_weights().items():
        np.testing.assert_array_equal(variable.numpy(), weights[name], err_msg=name)
    assert model.history == history
    # and the refinement did change the weights
    kernel = refined.network.named_weights()["encoder.blocks.0.conv0.kernel"].numpy()
    assert not np.array_equal(kernel, weights["encoder.blocks.0.conv0.kernel"])


def test_refinement_refuses_another_architecture_or_backend(
    model: TrainedModel, training: TrainingData
) -> None:
    config = model.config
    wider = config.replace(model=config.model.replace(n_filters_scale=3))
    with pytest.raises(ValueError, match=r"n_filters_scale: 3 in the config, 1 in the model"):
        TensorFlowBackend().train_from(model, training, wider, hooks=hooks_for())
    foreign = dataclasses.replace(model, backend="pytorch")
    with pytest.raises(BackendMismatchError, match="'pytorch'"):
        TensorFlowBackend().train_from(foreign, training, config, hooks=hooks_for())

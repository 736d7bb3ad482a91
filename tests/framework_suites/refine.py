"""Warm start: refining a trained model on the very data it is about to reconstruct."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from backend_helpers import Recorder, hooks_for

from framework_suites.framework import Framework
from ptycho_core.data import PtychoData
from ptycho_core.errors import BackendMismatchError
from ptycho_core.physics import poisson_nll
from ptycho_core.protocol import SupportsWarmStart, TrainedModel, TrainingData
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data, refine_model, refinement_config


def physics_loss(fw: Framework, model: TrainedModel, data: PtychoData) -> float:
    """The Poisson NLL of ``model``'s predicted amplitudes on every pattern of ``data``."""
    prepared = prepare_training_data(data, refinement_config(model, 1), probe=model.probe)
    groups = prepared.groups
    amplitude = fw.amplitude(model.network, groups.diffraction, groups.coords_relative)
    target = prepared.intensity_scale * groups.diffraction.astype(np.float64)
    return poisson_nll(amplitude.astype(np.float64) ** 2, target**2)


class RefineSuite:
    """``train_from`` of the backend ``fw``, through ``refine_model``."""

    @pytest.fixture(scope="class")
    @classmethod
    def target(cls) -> PtychoData:
        """A small scan of another object than the one the model was trained on."""
        return default_dataset("test", N=64, n_positions=24)

    def test_refinement_lowers_the_loss_on_the_target_data_and_keeps_the_input(
        self, fw: Framework, small_model: TrainedModel, target: PtychoData
    ) -> None:
        assert isinstance(fw.backend(), SupportsWarmStart)
        weights = fw.weights(small_model.network)
        history = {k: list(v) for k, v in small_model.history.items()}
        before = physics_loss(fw, small_model, target)
        recorder = Recorder()
        # a fine-tuning rate: a fresh Adam at the training rate first kicks a barely trained model
        config = refinement_config(small_model, 2).replace(learning_rate=3e-4)
        refined = refine_model(
            small_model, target, epochs=2, config=config, hooks=hooks_for(recorder)
        )

        assert physics_loss(fw, refined, target) < before
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
        for name, value in fw.weights(small_model.network).items():
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
        assert small_model.history == history
        # and the refinement did change the weights
        kernel = f"encoder.blocks.0.conv0.{fw.kernel}"
        assert not np.array_equal(fw.weights(refined.network)[kernel], weights[kernel])

    def test_refinement_refuses_another_architecture_or_backend(
        self, fw: Framework, small_model: TrainedModel, small_training: TrainingData
    ) -> None:
        backend = fw.backend()
        config = small_model.config
        wider = config.replace(model=config.model.replace(n_filters_scale=3))
        with pytest.raises(ValueError, match=r"n_filters_scale: 3 in the config, 1 in the model"):
            backend.train_from(small_model, small_training, wider, hooks=hooks_for())
        foreign = dataclasses.replace(small_model, backend=fw.other)
        with pytest.raises(BackendMismatchError, match=f"'{fw.other}'"):
            backend.train_from(foreign, small_training, config, hooks=hooks_for())

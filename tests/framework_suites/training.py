"""A backend's training: determinism, hooks, the loss, the learning-rate schedule, model types,
precision and refusals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from backend_helpers import STALLED_PLATEAU, Recorder, hooks_for

from framework_suites.framework import Framework
from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.data import PtychoData
from ptycho_core.physics import initial_output_gain, poisson_nll
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.schedule import LearningRateSchedule
from ptycho_core.workflows import prepare_training_data


def train(fw: Framework, data: TrainingData, recorder: Recorder | None = None, **changes):
    """A model trained on ``data`` under ``fw.small_config(**changes)``."""
    return fw.backend().train(data, fw.small_config(**changes), hooks=hooks_for(recorder))


class TrainingSuite:
    """Training with the backend ``fw``."""

    @pytest.fixture(scope="class")
    @classmethod
    def trained(
        cls, fw: Framework, small_training: TrainingData
    ) -> tuple[Recorder, TrainingConfig, TrainedModel]:
        """One two-epoch run shared by the tests that only inspect its results."""
        recorder = Recorder()
        config = fw.small_config(nepochs=2, early_stop_patience=5)
        model = fw.backend().train(small_training, config, hooks=hooks_for(recorder))
        return recorder, config, model

    @pytest.fixture(scope="class")
    @classmethod
    def supervised(cls, fw: Framework, train_set: PtychoData) -> tuple[Any, TrainingData, Any]:
        """A supervised gridsize-2 model: (config, data, model)."""
        config = fw.small_config(
            model=ModelConfig(N=64, gridsize=2, model_type="supervised"), n_groups=16, batch_size=8
        )
        data = prepare_training_data(train_set, config)
        return config, data, fw.backend().train(data, config, hooks=hooks_for())

    @pytest.fixture(scope="class")
    @classmethod
    def bf16(cls, fw: Framework, small_training: TrainingData) -> tuple[TrainedModel, tuple, tuple]:
        """A bf16-mixed model, with the process's global state before and after training."""
        before = fw.global_state()
        model = train(fw, small_training, precision="bf16-mixed")
        return model, before, fw.global_state()

    def test_two_trainings_with_one_seed_give_identical_weights(
        self, fw: Framework, small_training: TrainingData
    ) -> None:
        before = fw.global_state()
        first = train(fw, small_training)
        # seeded by config.seed alone: the process-global generators and flags are left as
        # they were
        assert fw.global_state() == before
        second = train(fw, small_training)
        weights1, weights2 = fw.weights(first.network), fw.weights(second.network)
        assert weights1.keys() == weights2.keys()
        for name, value in weights1.items():
            np.testing.assert_array_equal(value, weights2[name], err_msg=name)
        assert first.history == second.history
        # the test can fail: another seed gives other weights
        other = fw.weights(train(fw, small_training, seed=4).network)
        kernel = f"encoder.blocks.0.conv0.{fw.kernel}"
        assert not np.array_equal(weights1[kernel], other[kernel])

    def test_hooks_history_and_returned_model(
        self, fw: Framework, trained, small_training: TrainingData
    ) -> None:
        recorder, config, model = trained
        (start,) = recorder.named("train_start")
        assert start["backend"] == fw.name and start["config"] == config
        n_validation = int(small_training.n_groups * config.validation_split)
        assert start["n_groups"] == small_training.n_groups - n_validation == 24
        epochs = recorder.named("epoch_end")
        assert [e["epoch"] for e in epochs] == [0, 1] and all(e["nepochs"] == 2 for e in epochs)
        for e in epochs:
            assert set(e["losses"]) == {"loss", "val_loss"}
            assert all(isinstance(v, float) and math.isfinite(v) for v in e["losses"].values())
        (end,) = recorder.named("train_end")
        assert (
            end["history"]
            == model.history
            == {
                "loss": [e["losses"]["loss"] for e in epochs],
                "val_loss": [e["losses"]["val_loss"] for e in epochs],
            }
        )
        assert [name for name, _ in recorder.calls] == [
            "train_start",
            "epoch_end",
            "epoch_end",
            "train_end",
        ]
        assert model.backend == fw.name and model.config.backend == fw.name
        assert model.probe.dtype == np.complex64
        np.testing.assert_array_equal(model.probe, small_training.probe)
        assert model.intensity_scale == small_training.intensity_scale
        assert model.extra["output_gain"] == model.network.output_gain
        # the gain trained: it left its calibrated start
        assert model.extra["output_gain"] != pytest.approx(
            initial_output_gain(small_training.probe), rel=1e-6
        )
        # N 64, gridsize 1, n_filters_scale 1: 585,244 + the gain
        assert model.extra["parameters"] == 585_245

    def test_the_loss_is_the_shared_poisson_nll(
        self, fw: Framework, trained, small_training: TrainingData
    ) -> None:
        """The last validation loss = mean(λ − k·log(λ+ε)) of the final network on the last groups."""
        _, config, model = trained
        _, val = small_training.split(config.validation_split)
        predicted = fw.amplitude(model.network, val.groups.diffraction, val.groups.coords_relative)
        target = small_training.intensity_scale * val.groups.diffraction.astype(np.float64)
        expected = poisson_nll(predicted.astype(np.float64) ** 2, target**2)
        assert model.history["val_loss"][-1] == pytest.approx(expected, rel=1e-4)

    def test_every_step_uses_the_rate_of_the_shared_schedule(
        self, fw: Framework, small_training: TrainingData
    ) -> None:
        """24 training groups in batches of 8: 3 steps an epoch, 9 in all, 4 of them warmup."""
        config = fw.small_config(
            nepochs=3,
            batch_size=8,
            learning_rate=2e-3,
            min_learning_rate=1e-4,
            lr_warmup_steps=4,
            early_stop_patience=5,
        )
        expected = [LearningRateSchedule(config, 9).rate(s) for s in range(9)]
        assert expected[3] == 2e-3 and expected[-1] == 1e-4
        network, history, rates, steps = fw.fit_recording_rates(small_training, config, hooks_for())
        assert len(history["loss"]) == 3
        assert steps == list(range(9))
        np.testing.assert_allclose(rates, expected, rtol=fw.rate_rtol)
        # a warm start runs a schedule of its own, from its first step
        *_, again, _ = fw.fit_recording_rates(small_training, config, hooks_for(), initial=network)
        np.testing.assert_allclose(again, expected, rtol=fw.rate_rtol)

    @pytest.mark.parametrize("validation_split", [0.25, 0.0])
    def test_plateau_schedule_cuts_the_rate_when_the_loss_stalls(
        self, fw: Framework, train_set: PtychoData, validation_split: float
    ) -> None:
        """The network does not move (``STALLED_PLATEAU``): after the first epoch the monitored
        loss (val_loss, or loss without validation) never improves, so every epoch cuts."""
        config = fw.small_config(validation_split=validation_split, **STALLED_PLATEAU)
        data = prepare_training_data(train_set, config)
        _, history, rates, _ = fw.fit_recording_rates(data, config, hooks_for())
        monitored = history["val_loss" if validation_split else "loss"]
        assert len(monitored) == 4 and max(monitored) - min(monitored) < 1e-4
        # 24 or 32 groups in batches of 16: 2 steps an epoch; warmup over the first 2 steps,
        # improvement at epoch 0, cuts after epochs 1 and 2 (the second one to the floor)
        expected = [5e-10, 1e-9, 1e-9, 1e-9, 5e-10, 5e-10, 3e-10, 3e-10]
        np.testing.assert_allclose(rates, expected, rtol=max(fw.rate_rtol, 1e-12))

    def test_the_cosine_schedule_runs_every_epoch_without_validation(
        self, fw: Framework, small_training: TrainingData
    ) -> None:
        # a rate of ~0: no epoch improves on the first by more than round-off, so early
        # stopping with patience 1 would end the run after two or three epochs
        frozen = {"learning_rate": 1e-12, "min_learning_rate": 1e-12, "early_stop_patience": 1}
        model = train(fw, small_training, nepochs=5, validation_split=0.0, **frozen)
        assert set(model.history) == {"loss"} and len(model.history["loss"]) == 5

    def test_supervised_model_trains_on_object_patches(self, fw: Framework, supervised) -> None:
        _, data, model = supervised
        assert data.groups.object_patches is not None
        for name in ("loss", "val_loss"):
            assert model.history[name][0] > 0 and math.isfinite(model.history[name][0])

    def test_bf16_mixed_training_runs_and_stays_finite(self, fw: Framework, bf16) -> None:
        model, before, after = bf16
        assert model.config.precision == "bf16-mixed"
        assert all(math.isfinite(v) for v in model.history["loss"])
        assert all(np.all(np.isfinite(v)) for v in fw.weights(model.network).values())
        assert after == before  # the precision policy does not outlive the training

    @pytest.mark.parametrize(
        ("model", "message"),
        [
            (ModelConfig(N=128), r"expected groups of 128×128×1 .* found 64×64×1"),
            (ModelConfig(N=64, gridsize=2), r"expected groups of 64×64×4 .* found 64×64×1"),
        ],
        ids=["N", "gridsize"],
    )
    def test_training_data_that_does_not_fit_the_config_is_refused_before_training(
        self, fw: Framework, small_training: TrainingData, model: ModelConfig, message: str
    ) -> None:
        recorder = Recorder()
        with pytest.raises(ValueError, match=message):
            train(fw, small_training, recorder, model=model)
        assert recorder.calls == []

    def test_probe_trainable_trains_the_probe(
        self, fw: Framework, small_training: TrainingData
    ) -> None:
        model = train(fw, small_training, probe_trainable=True)
        assert not np.array_equal(model.probe, small_training.probe)
        np.testing.assert_array_equal(model.probe, fw.network_probe(model.network))

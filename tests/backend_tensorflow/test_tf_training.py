"""Keras training: determinism, hooks, schedule, precision, devices and unsupported settings."""

from __future__ import annotations

import random

import numpy as np
import pytest
from backend_helpers import STALLED_PLATEAU
from helpers_tf import Recorder, hooks_for, small_config

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.physics import initial_output_gain, poisson_nll
from ptycho_core.schedule import LearningRateSchedule
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data
from ptycho_tf._keras import keras, tf
from ptycho_tf.backend import TensorFlowBackend
from ptycho_tf.training import (
    ScheduleCallback,
    build_network,
    fit,
    make_callbacks,
    resolve_devices,
)


@pytest.fixture(scope="module")
def dataset():
    return default_dataset("train", N=64, n_positions=96, seed=1)


def _train(dataset, config: TrainingConfig, recorder: Recorder | None = None):
    data = prepare_training_data(dataset, config)
    return TensorFlowBackend().train(data, config, hooks=hooks_for(recorder)), data


@pytest.fixture(scope="module")
def trained(dataset):
    """One small training run shared by the tests that only inspect its results."""
    recorder = Recorder()
    config = small_config(nepochs=2, n_groups=40, validation_split=0.2, seed=4)
    model, data = _train(dataset, config, recorder)
    return recorder, config, model, data


def test_two_seeded_trainings_give_identical_weights_and_history(dataset) -> None:
    config = small_config(nepochs=2, n_groups=24, validation_split=0.0, seed=11)
    first, _ = _train(dataset, config)
    second, _ = _train(dataset, config)
    assert first.history == second.history and len(first.history["loss"]) == 2
    a, b = first.network.named_weights(), second.network.named_weights()
    for name in a:
        assert np.array_equal(a[name].numpy(), b[name].numpy()), name
    initial = build_network(config.model, first.probe, first.intensity_scale, seed=config.seed)
    name = "encoder.blocks.0.conv0.kernel"
    assert not np.array_equal(initial.named_weights()[name].numpy(), a[name].numpy())  # it trained


def test_hooks_history_and_returned_model(trained) -> None:
    recorder, config, model, data = trained
    start = recorder.named("train_start")
    assert len(start) == 1 and start[0]["backend"] == "tensorflow" and start[0]["config"] == config
    assert start[0]["n_groups"] == 32  # training groups, after the validation split
    epochs = recorder.named("epoch_end")
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["nepochs"] == 2 for e in epochs)
    assert all(set(e["losses"]) == {"loss", "val_loss"} for e in epochs)
    assert all(
        isinstance(v, float) and np.isfinite(v) for e in epochs for v in e["losses"].values()
    )
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
    assert model.backend == "tensorflow" and model.config.backend == "tensorflow"
    assert model.probe.dtype == np.complex64 and np.array_equal(model.probe, data.probe)
    assert model.intensity_scale == data.intensity_scale
    assert model.extra["output_gain"] == model.network.output_gain
    assert model.extra["output_gain"] != pytest.approx(initial_output_gain(data.probe), rel=1e-6)
    assert (
        model.extra["parameters"] == 585_245
    )  # N 64, gridsize 1, n_filters_scale 1: 585,244 + the gain
    assert model.network.precision == "32"
    assert getattr(model.network, "optimizer", None) is None  # a clean copy, not the fitted model


def test_the_loss_is_the_shared_poisson_nll(trained) -> None:
    """The last validation loss = mean(λ − k·log(λ+ε)) of the final network on the last groups."""
    _, config, model, data = trained
    _, val = data.split(config.validation_split)
    predicted = model.network((val.groups.diffraction, val.groups.coords_relative)).numpy()
    target = data.intensity_scale * val.groups.diffraction.astype(np.float64)
    expected = poisson_nll(predicted.astype(np.float64) ** 2, target**2)
    assert model.history["val_loss"][-1] == pytest.approx(expected, rel=1e-4)


def test_bfloat16_training_restores_global_state_and_returns_a_float32_network(dataset) -> None:
    from tensorflow.python.framework import config as tf_config

    random.seed(123)
    np.random.seed(456)
    python_state, numpy_state = random.getstate(), np.random.get_state()
    assert not tf_config.is_op_determinism_enabled()
    model, _ = _train(
        dataset, small_config(precision="bf16-mixed", n_groups=16, validation_split=0.0)
    )
    assert random.getstate() == python_state
    restored = np.random.get_state()
    assert restored[0] == numpy_state[0] and np.array_equal(restored[1], numpy_state[1])
    assert not tf_config.is_op_determinism_enabled()
    assert keras.config.dtype_policy().name == "float32"
    assert model.network.precision == "32"
    assert model.network.encoder.blocks[0].conv0.compute_dtype == "float32"
    assert np.isfinite(model.history["loss"][0]) and "val_loss" not in model.history
    assert model.config.precision == "bf16-mixed"


def test_supervised_training_fits_the_generator(dataset) -> None:
    config = small_config(
        model=ModelConfig(N=64, model_type="supervised"), n_groups=16, validation_split=0.0
    )
    model, _ = _train(dataset, config)
    assert np.isfinite(model.history["loss"][0]) and model.history["loss"][0] > 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"strategy": "ddp"},
            r"TrainingConfig.strategy: expected one of 'auto', 'mirrored'.*found 'ddp'",
        ),
        ({"num_nodes": 2}, r"TrainingConfig.num_nodes: .*expected 1, found 2"),
        ({"devices": 8}, r"devices: expected at most 1 \(the CPU devices TensorFlow sees"),
        ({"model": ModelConfig(N=128)}, r"expected groups of 128×128×1 .* found 64×64×1"),
        ({"model": ModelConfig(N=64, gridsize=2)}, r"expected groups of 64×64×4 .* found 64×64×1"),
    ],
)
def test_unsupported_settings_fail_before_training(dataset, changes, message) -> None:
    data = prepare_training_data(dataset, small_config())
    recorder = Recorder()
    with pytest.raises(ValueError, match=message):
        TensorFlowBackend().train(data, small_config(**changes), hooks=hooks_for(recorder))
    assert recorder.calls == []


def test_gpu_accelerator_without_a_gpu_is_an_error() -> None:
    if tf.config.list_logical_devices("GPU"):
        assert resolve_devices("gpu", 1)[0].endswith("GPU:0")
        return
    with pytest.raises(
        ConfigError, match="accelerator 'gpu' was requested, but TensorFlow sees no GPU"
    ):
        resolve_devices("gpu", 1)
    assert resolve_devices("cpu", "auto") == [d.name for d in tf.config.list_logical_devices("CPU")]


class StepRates(keras.callbacks.Callback):
    """The rate of every optimiser step, read from the optimiser right after the step."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []
        self.steps: list[int] = []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer.learning_rate.numpy()))
        self.steps.append(int(optimizer.iterations.numpy()) - 1)


def test_every_step_uses_the_rate_of_the_shared_schedule(dataset) -> None:
    """24 training groups in batches of 8: 3 steps an epoch, 9 in all, 4 of them warmup."""
    config = small_config(
        nepochs=3,
        batch_size=8,
        learning_rate=2e-3,
        min_learning_rate=1e-4,
        lr_warmup_steps=4,
        early_stop_patience=5,
    )
    data = prepare_training_data(dataset, config)
    expected = [LearningRateSchedule(config, 9).rate(s) for s in range(9)]
    assert expected[3] == 2e-3 and expected[-1] == 1e-4
    first = StepRates()
    network, history = fit(data, config, hooks_for(), callbacks=[first])
    assert len(history["loss"]) == 3
    assert first.steps == list(range(9))
    np.testing.assert_allclose(first.rates, expected, rtol=1e-7)  # a float32 variable
    # a warm start runs a schedule of its own, from its first step
    again = StepRates()
    fit(data, config, hooks_for(), initial=network, callbacks=[again])
    assert again.rates == first.rates


@pytest.mark.parametrize("validation_split", [0.25, 0.0])
def test_plateau_schedule_cuts_the_rate_when_the_loss_stalls(dataset, validation_split) -> None:
    """The network does not move (``STALLED_PLATEAU``): after the first epoch the monitored
    loss (val_loss, or loss without validation) never improves, so every epoch cuts."""
    config = small_config(validation_split=validation_split, **STALLED_PLATEAU)
    recorder = StepRates()
    _, history = fit(
        prepare_training_data(dataset, config), config, hooks_for(), callbacks=[recorder]
    )
    monitored = history["val_loss" if validation_split else "loss"]
    assert len(monitored) == 4 and max(monitored) - min(monitored) < 1e-4
    # 24 or 32 groups in batches of 16: 2 steps an epoch; warmup over the first 2 steps,
    # improvement at epoch 0, cuts after epochs 1 and 2 (the second one to the floor)
    expected = [5e-10, 1e-9, 1e-9, 1e-9, 5e-10, 5e-10, 3e-10, 3e-10]
    np.testing.assert_allclose(recorder.rates, expected, rtol=1e-7)


def test_callbacks_wire_the_config_and_early_stopping_watches_the_training_loss() -> None:
    config = small_config(nepochs=3, batch_size=4, lr_schedule="plateau", early_stop_patience=2)
    schedule, stopping, relay = make_callbacks(config, hooks_for(), 10, has_validation=True)
    assert isinstance(schedule, ScheduleCallback) and schedule.monitor == "val_loss"
    assert schedule.schedule.total_steps == 9  # 3 epochs of ⌈10 / 4⌉ batches
    assert schedule.schedule.kind == "plateau"
    assert make_callbacks(config, hooks_for(), 10, has_validation=False)[0].monitor == "loss"
    cosine = make_callbacks(
        config.replace(lr_schedule="cosine"), hooks_for(), 10, has_validation=True
    )
    assert not any(isinstance(c, keras.callbacks.EarlyStopping) for c in cosine)  # runs nepochs
    assert relay.n_groups == 10
    network = build_network(ModelConfig(N=64), np.ones((64, 64), np.complex64), 1.0)
    network.stop_training = False  # what fit sets before the first epoch
    stopping.set_model(network)
    stopping.on_train_begin()
    for epoch, loss in enumerate([3.0, 2.0, 2.0]):
        stopping.on_epoch_end(epoch, {"loss": loss, "val_loss": 0.0})
        assert not network.stop_training
    stopping.on_epoch_end(3, {"loss": 2.5, "val_loss": -1.0})  # val_loss improving does not count
    assert network.stop_training

"""Keras training: the shared training suite, and what only the Keras backend has."""

from __future__ import annotations

import numpy as np
import pytest
from backend_helpers import Recorder, hooks_for
from framework_suites.tf_framework import TENSORFLOW
from framework_suites.training import TrainingSuite, train
from helpers_tf import small_config

from ptycho_core.config import ModelConfig
from ptycho_core.errors import ConfigError
from ptycho_core.protocol import TrainingData
from ptycho_tf._keras import keras, tf
from ptycho_tf.training import ScheduleCallback, build_network, make_callbacks, resolve_devices


class TestTraining(TrainingSuite):
    """The shared training suite (framework_suites/training.py) on TensorFlow."""

    def test_the_returned_network_is_a_clean_float32_copy(self, trained) -> None:
        _, _, model = trained
        assert model.network.precision == "32"
        assert getattr(model.network, "optimizer", None) is None  # not the fitted model

    def test_bf16_training_returns_a_float32_network(self, bf16) -> None:
        model, _, _ = bf16
        assert model.network.precision == "32"
        assert model.network.encoder.blocks[0].conv0.compute_dtype == "float32"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"strategy": "ddp"},
            r"TrainingConfig.strategy: expected one of 'auto', 'mirrored'.*found 'ddp'",
        ),
        ({"num_nodes": 2}, r"TrainingConfig.num_nodes: .*expected 1, found 2"),
        ({"devices": 8}, r"devices: expected at most 1 \(the CPU devices TensorFlow sees"),
    ],
    ids=["strategy", "num-nodes", "devices"],
)
def test_unsupported_device_settings_fail_before_training(
    small_training: TrainingData, changes, message
) -> None:
    recorder = Recorder()
    with pytest.raises(ValueError, match=message):
        train(TENSORFLOW, small_training, recorder, **changes)
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

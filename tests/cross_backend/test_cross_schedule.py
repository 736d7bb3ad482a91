"""Both backends apply the same learning rate at every optimiser step, for both schedules."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from lightning.pytorch.callbacks import Callback

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.schedule import LearningRateSchedule
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data
from ptycho_tf import training as tf_training
from ptycho_torch import training as torch_training

STEPS = 9  # 3 epochs of 24 training groups in batches of 8


class TorchRates(Callback):
    """The rate of every optimiser step, read just before the step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])


class KerasRates(keras.callbacks.Callback):
    """The rate of every optimiser step, read right after the step."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_end(self, batch: int, logs=None) -> None:
        self.rates.append(float(self.model.optimizer.learning_rate.numpy()))


def _config(backend: str, schedule: str) -> TrainingConfig:
    values = {
        "model": ModelConfig(N=64, gridsize=1),
        "backend": backend,
        "nepochs": 3,
        "batch_size": 8,
        "n_groups": 32,
        "validation_split": 0.25,
        "accelerator": "cpu",
        "seed": 3,
        "lr_schedule": schedule,
        "lr_warmup_steps": 4,
        "early_stop_patience": 5,
    }
    if schedule == "cosine":
        values.update(learning_rate=2e-3, min_learning_rate=1e-4)
    else:
        # at a rate of 1e-9 the validation loss stalls in both frameworks (1e3 photons keep
        # it near 1, far above float32 round-off): cuts after epoch 1 (patience 1)
        values.update(
            nphotons=1e3,
            learning_rate=1e-9,
            min_learning_rate=1e-10,
            lr_plateau_factor=0.5,
            lr_plateau_patience=1,
        )
    return TrainingConfig(**values)


@pytest.fixture(scope="module")
def dataset():
    return default_dataset("train", N=64, n_positions=64, seed=2)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_both_backends_step_with_the_same_rates(dataset, schedule: str) -> None:
    hooks = make_plugin_manager(load_entry_points=False).hook
    torch_config, tf_config = _config("pytorch", schedule), _config("tensorflow", schedule)
    data = prepare_training_data(dataset, torch_config)
    torch_rates, keras_rates = TorchRates(), KerasRates()
    _, torch_history = torch_training.fit(data, torch_config, hooks, callbacks=[torch_rates])
    _, tf_history = tf_training.fit(data, tf_config, hooks, callbacks=[keras_rates])
    assert len(torch_history["val_loss"]) == len(tf_history["val_loss"]) == 3
    # the rates of the shared schedule, replayed with a stalling loss for 'plateau'
    reference = LearningRateSchedule(torch_config, STEPS)
    expected = []
    for epoch in range(3):
        expected += [reference.rate(s) for s in range(3 * epoch, 3 * epoch + 3)]
        reference.end_epoch(1.0)
    if schedule == "cosine":
        assert expected[3] == 2e-3 and expected[-1] == 1e-4
    else:
        assert expected[-3:] == [5e-10] * 3  # one cut, after epoch 1
    assert torch_rates.rates == expected
    np.testing.assert_allclose(keras_rates.rates, expected, rtol=1e-7)  # a float32 variable

"""Both backends apply the same learning rate at every optimiser step, for both schedules."""

from __future__ import annotations

import numpy as np
import pytest
from framework_suites.framework import Framework
from framework_suites.tf_framework import TENSORFLOW
from framework_suites.torch_framework import TORCH

from ptycho_core.config import TrainingConfig
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.schedule import LearningRateSchedule
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data

STEPS = 9  # 3 epochs of 24 training groups in batches of 8


def _config(fw: Framework, schedule: str) -> TrainingConfig:
    values = {
        "nepochs": 3,
        "batch_size": 8,
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
    return fw.small_config(**values)


@pytest.fixture(scope="module")
def dataset():
    return default_dataset("train", N=64, n_positions=64, seed=2)


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_both_backends_step_with_the_same_rates(dataset, schedule: str) -> None:
    hooks = make_plugin_manager(load_entry_points=False).hook
    torch_config, tf_config = _config(TORCH, schedule), _config(TENSORFLOW, schedule)
    data = prepare_training_data(dataset, torch_config)
    _, torch_history, torch_rates, _ = TORCH.fit_recording_rates(data, torch_config, hooks)
    _, tf_history, keras_rates, _ = TENSORFLOW.fit_recording_rates(data, tf_config, hooks)
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
    assert torch_rates == expected
    np.testing.assert_allclose(keras_rates, expected, rtol=1e-7)  # a float32 variable

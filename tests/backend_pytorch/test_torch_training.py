"""Training through Lightning: determinism, hooks, the learning-rate schedule, model types, precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backend_helpers import STALLED_PLATEAU
from helpers_torch import Recorder, hooks_for, small_config
from lightning.pytorch.callbacks import Callback

from ptycho_core.config import ModelConfig
from ptycho_core.physics import initial_output_gain
from ptycho_core.protocol import TrainingData
from ptycho_core.schedule import LearningRateSchedule
from ptycho_core.workflows import prepare_training_data
from ptycho_torch import training
from ptycho_torch.backend import TorchBackend


def _train(data: TrainingData, **changes):
    config = small_config(**changes)
    return TorchBackend().train(data, config, hooks=hooks_for())


def test_two_trainings_with_one_seed_give_identical_weights(small_training: TrainingData) -> None:
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    first = _train(small_training)
    # seeded by config.seed alone: the process-global generators are left as they were
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(
        np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state, strict=True)
    )
    second = _train(small_training)
    state1, state2 = first.network.state_dict(), second.network.state_dict()
    assert state1.keys() == state2.keys()
    for name in state1:
        assert torch.equal(state1[name], state2[name]), name
    assert first.history == second.history
    # the test can fail: another seed gives other weights
    other = _train(small_training, seed=4)
    assert not torch.equal(
        state1["encoder.blocks.0.conv0.weight"],
        other.network.state_dict()["encoder.blocks.0.conv0.weight"],
    )
    # training left the process's global torch flags as they were
    assert not torch.are_deterministic_algorithms_enabled()


def test_hooks_see_every_epoch_and_the_history(small_training: TrainingData) -> None:
    recorder = Recorder()
    config = small_config(nepochs=2, early_stop_patience=5)
    model = TorchBackend().train(small_training, config, hooks=hooks_for(recorder))
    (start,) = recorder.named("train_start")
    n_validation = int(small_training.n_groups * config.validation_split)
    assert start["backend"] == "pytorch"
    assert start["n_groups"] == small_training.n_groups - n_validation == 24
    assert start["config"] == config
    epochs = recorder.named("epoch_end")
    assert [e["epoch"] for e in epochs] == [0, 1]
    assert all(e["nepochs"] == 2 for e in epochs)
    for e in epochs:
        assert set(e["losses"]) == {"loss", "val_loss"}
        assert all(math.isfinite(v) for v in e["losses"].values())
    (end,) = recorder.named("train_end")
    assert end["history"] == model.history
    assert model.history["loss"] == [e["losses"]["loss"] for e in epochs]
    assert (
        model.extra["parameters"] == 585_245
    )  # N 64, gridsize 1, n_filters_scale 1: 585,244 + the gain
    assert model.extra["output_gain"] == pytest.approx(math.exp(model.network.log_gain.item()))
    # the gain trained: it left its calibrated start
    assert model.extra["output_gain"] != pytest.approx(
        initial_output_gain(small_training.probe), rel=1e-6
    )


def test_the_loss_is_the_poisson_nll_of_the_network_output(small_training: TrainingData) -> None:
    config = small_config()
    module = training.PtychoLightningModule(
        config.to_dict(), small_training.intensity_scale, probe=small_training.probe
    )
    groups = small_training.groups
    batch = (
        torch.from_numpy(groups.diffraction[:4].copy()),
        torch.from_numpy(groups.coords_relative[:4].copy()),
    )
    loss = module._loss(batch)
    out = module.network(batch[0].permute(0, 3, 1, 2), batch[1])
    rate = out.amplitude.detach().double().square().numpy()
    counts = (
        small_training.intensity_scale
        * groups.diffraction[:4].astype(np.float64).transpose(0, 3, 1, 2)
    ) ** 2
    expected = np.mean(rate - counts * np.log(rate + 1e-12))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    mixed = training.PtychoLightningModule(
        small_config(mae_weight=0.5, nll_weight=0.25).to_dict(),
        small_training.intensity_scale,
        probe=small_training.probe,
    )
    mixed.network.load_state_dict(module.network.state_dict())
    target = small_training.intensity_scale * batch[0].permute(0, 3, 1, 2)
    mae = (out.amplitude - target).abs().mean().item()
    assert mixed._loss(batch).item() == pytest.approx(0.25 * expected + 0.5 * mae, rel=1e-4)


def test_optimiser_and_stopping_follow_the_config(small_training: TrainingData) -> None:
    config = small_config(learning_rate=2e-3, early_stop_patience=7)
    module = training.PtychoLightningModule(config.to_dict(), 31.25, probe=small_training.probe)
    assert (
        module.hparams["config"] == config.to_dict() and module.hparams["intensity_scale"] == 31.25
    )
    optimiser = module.configure_optimizers()
    assert isinstance(optimiser, torch.optim.Adam)  # no torch scheduler: the core schedule
    assert optimiser.param_groups[0]["lr"] == 2e-3 and optimiser.param_groups[0]["betas"] == (
        0.9,
        0.999,
    )
    stopper = training.early_stopping(config)
    assert (stopper.monitor, stopper.patience, stopper.mode) == ("loss", 7, "min")
    # frozen gain: not handed to the optimiser
    frozen = training.PtychoLightningModule(
        small_config(intensity_scale_trainable=False).to_dict(), 31.25
    )
    handed = {
        id(p) for group in frozen.configure_optimizers().param_groups for p in group["params"]
    }
    assert id(frozen.network.log_gain) not in handed


class StepRates(Callback):
    """The rate of every optimiser step, read from the optimiser just before it steps."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.steps: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        (rate,) = {group["lr"] for group in optimizer.param_groups}
        self.rates.append(rate)
        self.steps.append(trainer.global_step)


def test_every_step_uses_the_rate_of_the_shared_schedule(small_training: TrainingData) -> None:
    """24 training groups in batches of 8: 3 steps an epoch, 9 in all, 4 of them warmup."""
    config = small_config(
        nepochs=3,
        batch_size=8,
        learning_rate=2e-3,
        min_learning_rate=1e-4,
        lr_warmup_steps=4,
        early_stop_patience=5,
    )
    expected = [LearningRateSchedule(config, 9).rate(s) for s in range(9)]
    assert expected[3] == 2e-3 and expected[-1] == 1e-4
    first = StepRates()
    network, history = training.fit(small_training, config, hooks_for(), callbacks=[first])
    assert len(history["loss"]) == 3
    assert first.steps == list(range(9))
    assert first.rates == expected
    # a warm start runs a schedule of its own, from its first step
    again = StepRates()
    training.fit(small_training, config, hooks_for(), initial=network, callbacks=[again])
    assert again.rates == expected


@pytest.mark.parametrize("validation_split", [0.25, 0.0])
def test_plateau_schedule_cuts_the_rate_when_the_loss_stalls(
    train_set, validation_split: float
) -> None:
    """The network does not move (``STALLED_PLATEAU``): after the first epoch the monitored
    loss (val_loss, or loss without validation) never improves, so every epoch cuts."""
    config = small_config(validation_split=validation_split, **STALLED_PLATEAU)
    data = prepare_training_data(train_set, config)
    recorder = StepRates()
    _, history = training.fit(data, config, hooks_for(), callbacks=[recorder])
    monitored = history["val_loss" if validation_split else "loss"]
    assert len(monitored) == 4 and max(monitored) - min(monitored) < 1e-4
    # 24 or 32 groups in batches of 16: 2 steps an epoch; warmup over the first 2 steps,
    # improvement at epoch 0, cuts after epochs 1 and 2 (the second one to the floor)
    expected = [5e-10, 1e-9, 1e-9, 1e-9, 5e-10, 5e-10, 3e-10, 3e-10]
    assert recorder.rates == pytest.approx(expected, rel=1e-12)


def test_hyperparameters_rebuild_the_module(small_model) -> None:
    """save_hyperparameters with plain values: a checkpoint reloads without extra arguments."""
    config = small_model.config
    module = training.PtychoLightningModule(
        config.to_dict(), small_model.intensity_scale, probe=small_model.probe
    )
    module.network.load_state_dict(small_model.network.state_dict())
    rebuilt = training.PtychoLightningModule(**module.hparams)
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    assert torch.equal(rebuilt.network.probe, torch.from_numpy(small_model.probe))
    for value in module.hparams.values():
        assert isinstance(value, dict | float | bool)


def test_without_validation_split_training_still_schedules(small_training: TrainingData) -> None:
    model = _train(small_training, validation_split=0.0, nepochs=2, early_stop_patience=5)
    assert set(model.history) == {"loss"} and len(model.history["loss"]) == 2


def test_the_cosine_schedule_runs_every_epoch(small_training: TrainingData) -> None:
    # a rate of ~0: no epoch improves on the first by more than round-off, so early
    # stopping with patience 1 would end the run after two or three epochs
    frozen = {"learning_rate": 1e-12, "min_learning_rate": 1e-12, "early_stop_patience": 1}
    model = _train(small_training, nepochs=5, validation_split=0.0, **frozen)
    assert len(model.history["loss"]) == 5


def test_supervised_model_trains_on_object_patches(train_set) -> None:
    config = small_config(
        model=ModelConfig(N=64, gridsize=2, model_type="supervised"), n_groups=16, batch_size=8
    )
    data = prepare_training_data(train_set, config)
    assert data.groups.object_patches is not None
    model = TorchBackend().train(data, config, hooks=hooks_for())
    assert model.history["loss"][0] > 0 and math.isfinite(model.history["loss"][0])
    # the supervised loss of the trained network is the one reported
    module = training.PtychoLightningModule(
        config.to_dict(), data.intensity_scale, probe=data.probe
    )
    module.network.load_state_dict(model.network.state_dict())
    val = data.split(config.validation_split)[1]
    batch = tuple(
        torch.from_numpy(a.copy())
        for a in (val.groups.diffraction, val.groups.coords_relative, val.groups.object_patches)
    )
    with torch.no_grad():
        assert module._loss(batch).item() == pytest.approx(model.history["val_loss"][0], rel=1e-4)


def test_bf16_mixed_training_runs_and_stays_finite(small_training: TrainingData) -> None:
    model = _train(small_training, precision="bf16-mixed")
    assert all(math.isfinite(v) for v in model.history["loss"])
    assert all(torch.isfinite(p).all() for p in model.network.parameters())


def test_training_data_that_does_not_fit_the_config_is_refused(
    small_training: TrainingData,
) -> None:
    with pytest.raises(ValueError, match=r"expected groups of 64×64×4 .* found 64×64×1"):
        TorchBackend().train(
            small_training, small_config(model=ModelConfig(N=64, gridsize=2)), hooks=hooks_for()
        )
    with pytest.raises(ValueError, match="expected groups of 128×128×1"):
        TorchBackend().train(
            small_training, small_config(model=ModelConfig(N=128)), hooks=hooks_for()
        )


def test_unusable_device_settings_are_value_errors(small_training: TrainingData) -> None:
    with pytest.raises(
        ValueError,
        match=r"TrainingConfig accelerator='cpu', devices=1, strategy='no-such-strategy'",
    ):
        _train(small_training, strategy="no-such-strategy")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="accelerator='gpu'"):
            _train(small_training, accelerator="gpu")


def test_probe_trainable_trains_the_probe(small_training: TrainingData) -> None:
    model = _train(small_training, probe_trainable=True)
    assert not np.array_equal(model.probe, small_training.probe)
    np.testing.assert_array_equal(model.probe, model.network.probe.detach().numpy())

"""Training through Lightning: the shared training suite, and what only Lightning has."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from framework_suites.torch_framework import TORCH
from framework_suites.training import TrainingSuite, train
from helpers_torch import small_config

from ptycho_core.protocol import TrainingData
from ptycho_torch import training


class TestTraining(TrainingSuite):
    """The shared training suite (framework_suites/training.py) on PyTorch."""

    def test_the_reported_supervised_loss_is_the_modules_loss(self, supervised) -> None:
        config, data, model = supervised
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
            assert module._loss(batch).item() == pytest.approx(
                model.history["val_loss"][0], rel=1e-4
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


def test_unusable_device_settings_are_value_errors(small_training: TrainingData) -> None:
    with pytest.raises(
        ValueError,
        match=r"TrainingConfig accelerator='cpu', devices=1, strategy='no-such-strategy'",
    ):
        train(TORCH, small_training, strategy="no-such-strategy")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="accelerator='gpu'"):
            train(TORCH, small_training, accelerator="gpu")

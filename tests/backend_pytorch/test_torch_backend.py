"""TorchBackend: the shared backend suite, and what only the PyTorch backend has."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from framework_suites.backend import BackendSuite
from helpers_torch import hooks_for, small_config

import ptycho_torch
from ptycho_core.config import InferenceConfig
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.results import evaluate_stitched
from ptycho_core.workflows import prepare_training_data, reconstruct
from ptycho_torch import physics
from ptycho_torch.backend import TorchBackend, select_device
from ptycho_torch.training import build_network


class TestBackend(BackendSuite):
    """The shared backend suite (framework_suites/backend.py) on PyTorch."""


def test_backend_spec() -> None:
    spec = ptycho_torch.BACKEND
    assert spec.name == "pytorch" and spec.target == "ptycho_torch.backend:TorchBackend"
    assert spec.requires == ("torch", "lightning")
    assert spec.install_hint == "pip install 'ptycho[torch]'"


def test_device_selection() -> None:
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="found 'gpu' but torch sees no CUDA device"):
            select_device("gpu")
    with pytest.raises(ValueError, match="expected 'auto', 'cpu' or 'gpu', found 'tpu'"):
        select_device("tpu")


def _score(model: TrainedModel, data, backend: TorchBackend) -> dict[str, float]:
    result = reconstruct(
        model, data, InferenceConfig(backend="pytorch"), hooks=hooks_for(), backend=backend
    )
    return evaluate_stitched(result.stitched, data)


def _heldout_deviance(model: TrainedModel, data: TrainingData) -> float:
    """Mean Poisson deviance of the model's physics on groups it never saw (0 = perfect fit)."""
    groups = data.groups
    x = torch.from_numpy(groups.diffraction.copy()).permute(0, 3, 1, 2)
    with torch.no_grad():
        out = model.network(x, torch.from_numpy(groups.coords_relative.copy()))
        return physics.poisson_deviance(out.amplitude, data.intensity_scale * x).item()


@pytest.mark.slow
def test_training_helps(train_set, test_set) -> None:
    """On an object it never saw, a trained network fits the data and the image far better.

    Budget: 16 epochs over 256 groups (256 steps, a 40-step warmup; about 35 s on 2 idle
    cores). The untrained network already starts at the calibrated output gain, so the
    comparison is with a network whose intensity level is right but whose weights are random:
    the held-out Poisson deviance falls several-fold (≈ 63k per pixel untrained).
    """
    backend = TorchBackend()
    config = small_config(
        n_groups=256, nepochs=16, lr_warmup_steps=40, early_stop_patience=5, validation_split=0.0
    )
    data = prepare_training_data(train_set, config)
    heldout = prepare_training_data(test_set, config.replace(n_groups=64))
    trained = backend.train(data, config, hooks=hooks_for())
    torch.manual_seed(config.seed)
    untrained = dataclasses.replace(
        trained, network=build_network(config.model, data.probe, data.intensity_scale)
    )
    fit_trained, fit_untrained = (
        _heldout_deviance(trained, heldout),
        _heldout_deviance(untrained, heldout),
    )
    assert fit_trained < fit_untrained / 3, (fit_trained, fit_untrained)
    good = _score(trained, test_set, backend)
    bad = _score(untrained, test_set, backend)
    assert all(math.isfinite(v) for v in good.values())
    assert good["amplitude_psnr"] > bad["amplitude_psnr"] + 0.3, (good, bad)
    assert good["amplitude_mae"] < 0.97 * bad["amplitude_mae"], (good, bad)

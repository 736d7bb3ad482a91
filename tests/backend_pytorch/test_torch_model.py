"""The generator's architecture: the shared model suite, and what only torch has."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from framework_suites.model import ModelSuite, network, random_batch
from framework_suites.torch_framework import TORCH

from ptycho_core.config import ModelConfig


class TestModel(ModelSuite):
    """The shared model suite (framework_suites/model.py) on PyTorch."""


def test_the_probe_is_a_complex_tensor_of_the_state() -> None:
    state = network(TORCH, ModelConfig(N=64)).state_dict()
    assert state["probe"].dtype == torch.complex64 and state["probe"].shape == (64, 64)


def test_the_training_pass_object_is_the_inference_object() -> None:
    built = network(TORCH, ModelConfig(N=64, gridsize=2), seed=1)
    x, coords = (torch.from_numpy(a) for a in random_batch(3, 64, 4, seed=1))
    with torch.no_grad():
        out = built(x.permute(0, 3, 1, 2), coords)
        assert torch.equal(built.predict_object(x.permute(0, 3, 1, 2), coords), out.object)


def test_log_gain_is_a_registered_parameter_that_trains() -> None:
    """The scale must be in the state dict and move."""
    built = network(TORCH, ModelConfig(N=64), seed=0)
    assert "log_gain" in built.state_dict() and built.log_gain.requires_grad
    before = built.log_gain.item()
    x = torch.rand(2, 1, 64, 64)
    out = built(x, torch.zeros(2, 1, 2, 1))
    optimiser = torch.optim.Adam([p for p in built.parameters() if p.requires_grad], lr=1e-2)
    (out.amplitude.square().mean()).backward()
    optimiser.step()
    assert built.log_gain.item() != before
    assert built.output_gain == pytest.approx(np.exp(built.log_gain.item()))

    frozen = network(TORCH, ModelConfig(N=64), intensity_scale_trainable=False)
    assert not frozen.log_gain.requires_grad and "log_gain" in frozen.state_dict()


def test_probe_trainable_makes_the_probe_a_parameter() -> None:
    built = network(TORCH, ModelConfig(N=64), probe_trainable=True)
    assert any(p is built.probe for p in built.parameters())
    fixed = network(TORCH, ModelConfig(N=64))
    assert all(p is not fixed.probe for p in fixed.parameters())


def test_network_is_channels_last() -> None:
    built = network(TORCH, ModelConfig(N=64))
    weight = built.encoder.blocks[1].conv0.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)

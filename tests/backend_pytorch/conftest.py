"""Tests of the PyTorch backend; skipped as a whole where torch or Lightning is missing."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

from helpers_torch import hooks_for, small_config

from ptycho_core.data import PtychoData
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_training_data


@pytest.fixture(scope="session")
def train_set() -> PtychoData:
    """The embedded simulated training dataset (N=64)."""
    return default_dataset("train", N=64)


@pytest.fixture(scope="session")
def test_set() -> PtychoData:
    """The embedded simulated test dataset: another object than the training one."""
    return default_dataset("test", N=64)


@pytest.fixture(scope="session")
def small_training(train_set: PtychoData) -> TrainingData:
    return prepare_training_data(train_set, small_config())


@pytest.fixture(scope="session")
def small_model(small_training: TrainingData) -> TrainedModel:
    """A one-epoch model (for persistence and inference-contract tests, not for quality)."""
    from ptycho_torch.backend import TorchBackend

    return TorchBackend().train(small_training, small_config(), hooks=hooks_for())

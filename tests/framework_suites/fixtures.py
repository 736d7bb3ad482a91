"""Fixtures of the shared suites, imported by each backend folder's conftest.py.

They build on ``fw``, the framework adapter that conftest defines.
"""

from __future__ import annotations

import pytest
from backend_helpers import hooks_for

from framework_suites.framework import Framework
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
def small_training(fw: Framework, train_set: PtychoData) -> TrainingData:
    """32 groups of the training set, prepared for :meth:`Framework.small_config`."""
    return prepare_training_data(train_set, fw.small_config())


@pytest.fixture(scope="session")
def small_model(fw: Framework, small_training: TrainingData) -> TrainedModel:
    """A one-epoch model (for persistence and inference-contract tests, not for quality)."""
    return fw.backend().train(small_training, fw.small_config(), hooks=hooks_for())

"""Tests of the PyTorch backend; skipped as a whole where torch or Lightning is missing."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

from framework_suites.fixtures import small_model, small_training, test_set, train_set  # noqa: F401
from framework_suites.torch_framework import TORCH, TorchFramework


@pytest.fixture(scope="session")
def fw() -> TorchFramework:
    """The framework adapter of the shared suites (framework_suites/)."""
    return TORCH

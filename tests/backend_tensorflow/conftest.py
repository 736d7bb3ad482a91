"""Tests of the TensorFlow backend; skipped as a whole where TensorFlow or Keras is missing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from framework_suites.fixtures import small_model, small_training, test_set, train_set  # noqa: F401
from framework_suites.tf_framework import TENSORFLOW, TensorFlowFramework


@pytest.fixture(scope="session")
def fw() -> TensorFlowFramework:
    """The framework adapter of the shared suites (framework_suites/)."""
    return TENSORFLOW

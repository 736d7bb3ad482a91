"""Tests of the TensorFlow backend; skipped as a whole where TensorFlow or Keras is missing."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

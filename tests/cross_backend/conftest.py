"""Cross-backend tests: run only where both frameworks are installed (tox env ``both``)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import pytest

for _module in ("torch", "lightning", "tensorflow", "keras"):
    pytest.importorskip(_module)

"""Helpers shared by the torch backend tests (imported by name: tests/backend_pytorch is on sys.path)."""

from __future__ import annotations

from backend_helpers import Recorder, hooks_for
from framework_suites.torch_framework import TORCH

__all__ = ["Recorder", "hooks_for", "small_config"]

small_config = TORCH.small_config
"""A fast N=64 pytorch training config (CPU, few groups, one epoch)."""

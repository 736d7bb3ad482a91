"""Warm start on PyTorch: the shared refinement suite."""

from __future__ import annotations

from framework_suites.refine import RefineSuite


class TestRefine(RefineSuite):
    """The shared refinement suite (framework_suites/refine.py) on PyTorch."""

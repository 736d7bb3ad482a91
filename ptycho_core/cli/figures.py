"""The figures the command line draws; the drawing code lives in :mod:`ptycho_core.figures`."""

from __future__ import annotations

from ptycho_core.figures import save_image, save_truth_comparison

__all__ = ["save_image", "save_truth_comparison"]

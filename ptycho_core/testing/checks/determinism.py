"""Checks that the same inputs give the same results: training for a seed (§4.1) and
inference for a model (§4.2)."""

from __future__ import annotations

import numpy as np

from ptycho_core.protocol import TrainedModel
from ptycho_core.testing.checks.support import fail, history_lists, rule_check, short
from ptycho_core.testing.harness import BackendHarness

__all__ = ["DETERMINISM_RTOL", "check_infer_deterministic", "check_train_deterministic"]

DETERMINISM_RTOL = 1e-4
"""Relative tolerance between two trainings with one seed (of histories, and of inference
outputs against their largest magnitude) when they are not bit-identical."""


@rule_check("train-deterministic", "§4.1")
def check_train_deterministic(h: BackendHarness) -> None:
    """Two trainings with the same data, config and seed give the same history and the
    same inference output (bit-identical, or equal to float32 round-off)."""
    me = check_train_deterministic
    h.require("trains")
    h.require("deterministic")
    first = h.model
    second_run = h.train()
    second = second_run.result
    if not isinstance(second, TrainedModel):
        raise fail(h, me, "a TrainedModel from the second training", type(second).__name__)
    a, b = history_lists(first.history) or {}, history_lists(second.history) or {}
    if a.keys() != b.keys() or any(
        not np.allclose(a[k], b[k], rtol=DETERMINISM_RTOL, atol=0, equal_nan=True) for k in a
    ):
        raise fail(h, me, f"the same history for the same seed ({short(a)})", short(b))
    out_a = np.asarray(h.inferred.result)
    out_b = np.asarray(h.infer(second).result)
    if out_a.shape != out_b.shape:
        raise fail(h, me, f"equal inference output shapes {out_a.shape}", f"{out_b.shape}")
    if not np.array_equal(out_a, out_b):
        scale = float(np.max(np.abs(out_a))) if out_a.size else 0.0
        error = float(np.max(np.abs(out_a - out_b))) if out_a.size else 0.0
        if not error <= DETERMINISM_RTOL * max(scale, 1e-30):
            raise fail(
                h,
                me,
                f"the same inference output for the same seed (max difference <= "
                f"{DETERMINISM_RTOL:g} x max |output| = {DETERMINISM_RTOL * scale:.3g})",
                f"max difference {error:.3g}",
            )


@rule_check("infer-deterministic", "§4.2")
def check_infer_deterministic(h: BackendHarness) -> None:
    """The same model and data give bit-identical ``infer`` output."""
    me = check_infer_deterministic
    first = np.asarray(h.inferred.result)
    second = np.asarray(h.infer(h.model).result)
    if first.shape != second.shape or not np.array_equal(first, second):
        difference = (
            f"max difference {float(np.max(np.abs(first - second))):.3g}"
            if first.shape == second.shape
            else f"shapes {first.shape} and {second.shape}"
        )
        raise fail(h, me, "bit-identical output from two identical infer calls", difference)

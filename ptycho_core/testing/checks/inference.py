"""Checks of one inference run: the patches it returns and the progress it reports (§4.2),
and that neither train nor infer modifies what it is given (§4)."""

from __future__ import annotations

import itertools

import numpy as np

from ptycho_core.testing.checks.support import fail, rule_check, short
from ptycho_core.testing.harness import BackendHarness

__all__ = ["check_infer_output", "check_infer_progress", "check_inputs_unchanged"]


@rule_check("infer-output", "§4.2")
def check_infer_output(h: BackendHarness) -> None:
    """``infer`` returns a finite complex64 numpy array of shape (B, N, N, 1)."""
    me = check_infer_output
    out = h.inferred.result
    expected_shape = (len(h.dataset.xcoords), h.N, h.N, 1)
    if type(out) is not np.ndarray:
        raise fail(h, me, "a numpy.ndarray", f"{type(out).__module__}.{type(out).__qualname__}")
    if out.dtype != np.complex64 or out.shape != expected_shape:
        raise fail(
            h, me, f"complex64 of shape {expected_shape}", f"{out.dtype} of shape {out.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise fail(h, me, "finite values", f"{int(np.sum(~np.isfinite(out)))} NaN or inf")


@rule_check("infer-progress", "§4.2")
def check_infer_progress(h: BackendHarness) -> None:
    """``ptycho_infer_progress`` is called with ``done`` strictly increasing in 1..total,
    ``total`` = B on every call, the last call with ``done == total``."""
    me = check_infer_progress
    total = len(h.dataset.xcoords)
    calls = h.inferred.recorder.named("infer_progress")
    if not calls:
        raise fail(h, me, "at least one ptycho_infer_progress call", "none")
    pairs = [(c["done"], c["total"]) for c in calls]
    if any(t != total or type(t) is not int or type(d) is not int for d, t in pairs):
        raise fail(h, me, f"integer done and total={total} on every call", short(pairs))
    done = [d for d, _ in pairs]
    if any(b <= a for a, b in itertools.pairwise(done)) or done[0] < 1:
        raise fail(h, me, f"done strictly increasing within 1..{total}", short(done))
    if done[-1] != total:
        raise fail(h, me, f"the last call with done == total == {total}", f"done={done[-1]}")
    if h.inferred.recorder.named("train_start") or h.inferred.recorder.named("epoch_end"):
        raise fail(h, me, "only progress hooks during infer", "training hooks")


@rule_check("inputs-unchanged", "§4")
def check_inputs_unchanged(h: BackendHarness) -> None:
    """``train`` and ``infer`` do not modify the arrays they are given."""
    me = check_inputs_unchanged
    if h.trained.before != h.trained.after:
        raise fail(h, me, "train to leave its TrainingData unchanged", "modified arrays")
    if h.inferred.before != h.inferred.after:
        raise fail(
            h, me, "infer to leave its GroupedData and the model's probe unchanged", "modified"
        )

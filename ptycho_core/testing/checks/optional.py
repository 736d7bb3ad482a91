"""Checks of the optional parts of the protocol, each skipped for a backend without it:
``forward`` (§5), warm start (``train_from``, §9.1) and the initial object
(``infer_from`` and ``model_from_probe``, §9.2), their refusals included."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptycho_core.geometry import extract_patches
from ptycho_core.grouping import GroupedData
from ptycho_core.protocol import (
    SupportsForward,
    SupportsInitialObject,
    SupportsWarmStart,
    TrainedModel,
)
from ptycho_core.testing.checks.determinism import DETERMINISM_RTOL
from ptycho_core.testing.checks.support import (
    expect_raises,
    fail,
    history_lists,
    require_patches,
    rule_check,
    same_history,
    short,
)
from ptycho_core.testing.data import (
    FOREIGN_BACKEND,
    INFER_BATCH,
    fingerprint,
    foreign_model,
    true_start,
)
from ptycho_core.testing.errors import CheckSkipped
from ptycho_core.testing.harness import BackendHarness, HookRecorder

__all__ = [
    "check_forward",
    "check_infer_from",
    "check_infer_from_rejects_foreign_model",
    "check_warm_start",
    "check_warm_start_rejects_mismatch",
]


@rule_check("forward", "§5")
def check_forward(h: BackendHarness) -> None:
    """The optional ``forward(model, diffraction, coords_relative)`` returns a finite
    complex64 array (B, N, N, 1) for one batch."""
    me = check_forward
    if not isinstance(h.backend, SupportsForward):
        raise CheckSkipped("the backend has no optional 'forward' method (SupportsForward, §5)")
    forward = h.backend.forward
    groups = h.groups()
    batch = min(INFER_BATCH, groups.n_groups)
    out = h.call(
        "forward",
        lambda: forward(h.model, groups.diffraction[:batch], groups.coords_relative[:batch]),
        "forward(model, diffraction, coords_relative) to return patches",
    )
    shape = (batch, h.N, h.N, 1)
    require_patches(h, me, out, shape)


def _warm_start_backend(h: BackendHarness) -> Any:
    if not isinstance(h.backend, SupportsWarmStart):
        raise CheckSkipped("the backend has no optional 'train_from' (SupportsWarmStart, §9.1)")
    return h.backend


def _initial_object_backend(h: BackendHarness) -> Any:
    if not isinstance(h.backend, SupportsInitialObject):
        raise CheckSkipped(
            "the backend has no optional 'infer_from' and 'model_from_probe' "
            "(SupportsInitialObject, §9.2)"
        )
    return h.backend


def _patch_error(h: BackendHarness, groups: GroupedData, patches: np.ndarray) -> float:
    """Relative squared error of patches against the true object's at the group centres,
    over the central N/2 box, after removing one complex scale (scale and phase are free)."""
    centres = groups.coords_offsets[:, 0, :, 0]
    truth = extract_patches(h.dataset.object, centres[:, 0], centres[:, 1], h.N)
    lo, hi = h.N // 4, 3 * h.N // 4
    found = np.asarray(patches)[:, lo:hi, lo:hi, 0].astype(np.complex128).ravel()
    expected = truth[:, lo:hi, lo:hi].astype(np.complex128).ravel()
    power = float(np.vdot(found, found).real)
    scale = np.vdot(found, expected) / power if power > 0 else 0.0
    return float(np.sum(np.abs(scale * found - expected) ** 2) / np.sum(np.abs(expected) ** 2))


@rule_check("warm-start", "§9.1")
def check_warm_start(h: BackendHarness) -> None:
    """For a backend with ``train_from``: continuing the trained model on its training data
    returns a new TrainedModel of this backend with the given config, calls the hooks as
    ``train`` does, starts from the trained state (its first epoch's loss is below the first
    epoch's loss of training from scratch) and leaves the input model unchanged (history,
    probe and ``infer`` output). Skipped without ``train_from``."""
    me = check_warm_start
    backend = _warm_start_backend(h)
    model = h.model
    output_before = np.asarray(h.inferred.result)
    history_before = history_lists(model.history)
    probe_before = np.array(model.probe, copy=True)
    config = h.training_config()
    data = h.training_data(config)
    recorder = HookRecorder()
    refined = h.call(
        "train_from",
        lambda: backend.train_from(model, data, config, hooks=recorder.relay()),
        "train_from(model, data, config, hooks=...) to return a TrainedModel",
    )
    if not isinstance(refined, TrainedModel) or refined is model:
        raise fail(
            h, me, "a new TrainedModel", f"{type(refined).__name__} (the input: {refined is model})"
        )
    if refined.backend != h.name or refined.config != config:
        raise fail(
            h,
            me,
            f"backend {h.name!r} and the given config",
            f"{refined.backend!r}, {short(refined.config)}",
        )
    train, _ = data.split(config.validation_split)
    starts = recorder.named("train_start")
    expected = {"backend": h.name, "config": config, "n_groups": train.n_groups}
    if len(starts) != 1 or recorder.calls[0][0] != "train_start" or starts[0] != expected:
        raise fail(h, me, "ptycho_train_start once, first, as in train", short(recorder.calls[:1]))
    history = history_lists(refined.history) or {}
    ends = recorder.named("train_end")
    epochs = [args["epoch"] for args in recorder.named("epoch_end")]
    if (
        not epochs
        or epochs != list(range(len(epochs)))
        or len(history.get("loss", [])) != len(epochs)
        or len(ends) != 1
        or recorder.calls[-1][0] != "train_end"
        or not same_history(ends[0]["history"], refined.history)
    ):
        raise fail(
            h,
            me,
            "ptycho_epoch_end once per epoch from 0 and ptycho_train_end last with the "
            "returned history, as in train",
            f"epochs {epochs}, history {short(history)}",
        )
    fresh = (history_lists(model.history) or {}).get("loss", [math.inf])
    if not history["loss"][0] < fresh[0]:
        raise fail(
            h,
            me,
            f"a first epoch's loss below {fresh[0]:.6g}, the first epoch's of training from "
            "scratch (a warm start continues from the trained model)",
            f"{history['loss'][0]:.6g}",
        )
    output_after = np.asarray(h.infer(model).result)
    # infer's own determinism is another rule: allow the tolerance of train-deterministic
    tolerance = DETERMINISM_RTOL * float(np.max(np.abs(output_before), initial=1e-30))
    if history_lists(model.history) != history_before:
        raise fail(h, me, "the input model's history unchanged", short(model.history))
    if not np.array_equal(model.probe, probe_before):
        raise fail(h, me, "the input model's probe unchanged", "another probe")
    if output_after.shape != output_before.shape or not np.allclose(
        output_after, output_before, rtol=0, atol=tolerance
    ):
        raise fail(
            h, me, "the input model's infer output unchanged (its weights untouched)", "it changed"
        )


@rule_check("warm-start-rejects-mismatch", "§9.1")
def check_warm_start_rejects_mismatch(h: BackendHarness) -> None:
    """``train_from`` raises ValueError before the first epoch for a config of another
    architecture (``model`` differs) and for a model of another backend. Skipped without
    ``train_from``."""
    me = check_warm_start_rejects_mismatch
    backend = _warm_start_backend(h)
    config = h.training_config()
    data = h.training_data(config)
    wider = config.model.n_filters_scale + 1
    cases = [
        (
            h.model,
            config.replace(model=config.model.replace(n_filters_scale=wider)),
            f"train_from with config.model.n_filters_scale={wider} on a model of "
            f"n_filters_scale {config.model.n_filters_scale}",
        ),
        (foreign_model(h.model), config, f"train_from with a model of backend {FOREIGN_BACKEND!r}"),
    ]
    for model, bad_config, what in cases:
        recorder = HookRecorder()
        expect_raises(
            h,
            me,
            lambda model=model, bad_config=bad_config, recorder=recorder: backend.train_from(
                model, data, bad_config, hooks=recorder.relay()
            ),
            ValueError,
            what,
        )
        if recorder.named("epoch_end"):
            raise fail(
                h, me, f"{what} to fail before the first epoch", "ptycho_epoch_end was called"
            )


@rule_check("infer-from", "§9.2")
def check_infer_from(h: BackendHarness) -> None:
    """For a backend with ``infer_from`` and ``model_from_probe``: ``model_from_probe`` gives
    a model of this backend with the given probe; ``infer_from`` returns finite complex64
    (B, N, N, 1) patches, reports progress up to B and leaves the initial object unchanged;
    it uses the object: started from the true object (cropped, with an origin, rescaled and
    phase-shifted) its patches are at least as close to the truth as those of ``infer`` (the
    flat start) after the same iterations, and differ from them. Skipped without the
    capability."""
    me = check_infer_from
    backend = _initial_object_backend(h)
    config = h.training_config()
    probe = h.training_data(config).probe
    model = h.call(
        "model_from_probe",
        lambda: backend.model_from_probe(probe, config),
        "model_from_probe(probe, config) to return a TrainedModel",
    )
    if not isinstance(model, TrainedModel) or model.backend != h.name:
        raise fail(
            h,
            me,
            f"model_from_probe to return a TrainedModel of backend {h.name!r}",
            f"{type(model).__name__} {getattr(model, 'backend', '')!r}",
        )
    if not np.array_equal(model.probe, probe):
        raise fail(h, me, "model_from_probe to keep the probe it was given", "another probe")
    start = true_start(h.dataset)
    before = fingerprint(start.image, start.weight, np.asarray(start.origin))
    groups = h.groups()
    recorder = HookRecorder()
    out = h.call(
        "infer_from",
        lambda: backend.infer_from(
            model, groups, h.inference_config(), start, hooks=recorder.relay()
        ),
        "infer_from(model, data, config, initial_object, hooks=...) to return patches",
    )
    shape = (groups.n_groups, h.N, h.N, 1)
    require_patches(h, me, out, shape)
    done = [args["done"] for args in recorder.named("infer_progress")]
    if not done or done[-1] != groups.n_groups:
        raise fail(h, me, f"ptycho_infer_progress ending at done={groups.n_groups}", f"{done}")
    if fingerprint(start.image, start.weight, np.asarray(start.origin)) != before:
        raise fail(h, me, "the initial object unchanged", "modified")
    flat = np.asarray(h.infer(model, groups).result)
    error_from, error_flat = _patch_error(h, groups, out), _patch_error(h, groups, flat)
    if not error_from <= error_flat:
        raise fail(
            h,
            me,
            f"patches started from the true object at least as close to it as the flat "
            f"start's (relative error {error_flat:.4g})",
            f"relative error {error_from:.4g}",
        )
    if np.array_equal(out, flat):
        raise fail(
            h, me, "patches that differ from infer's (the initial object is used)", "identical"
        )


@rule_check("infer-from-rejects-foreign-model", "§9.2")
def check_infer_from_rejects_foreign_model(h: BackendHarness) -> None:
    """``infer_from`` raises ValueError for a model whose ``backend`` is another name.
    Skipped without the capability."""
    me = check_infer_from_rejects_foreign_model
    backend = _initial_object_backend(h)
    foreign = foreign_model(h.model)
    expect_raises(
        h,
        me,
        lambda: backend.infer_from(
            foreign,
            h.groups(),
            h.inference_config(),
            true_start(h.dataset),
            hooks=HookRecorder().relay(),
        ),
        ValueError,
        f"infer_from with a model of backend {FOREIGN_BACKEND!r}",
    )

"""Checks that wrong inputs are refused with the protocol's errors: mismatched configs,
data of another size, models and bundles of another backend, corrupt bundles (§4), backend
options the backend does not know (§11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptycho_core.architecture import initial_arrays
from ptycho_core.bundle import write_bundle
from ptycho_core.config import SUPPORTED_N
from ptycho_core.errors import BackendMismatchError, BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_core.testing.checks.support import expect_raises, fail, rule_check
from ptycho_core.testing.data import (
    FOREIGN_BACKEND,
    UNKNOWN_OPTION,
    foreign_model,
    groups_with,
)
from ptycho_core.testing.harness import BackendHarness, HookRecorder

__all__ = [
    "check_infer_rejects_foreign_model",
    "check_infer_rejects_wrong_gridsize",
    "check_infer_rejects_wrong_n",
    "check_load_rejects_corrupt_bundle",
    "check_load_rejects_foreign_bundle",
    "check_save_rejects_foreign_model",
    "check_train_rejects_mismatch",
    "check_unknown_option",
]


@rule_check("train-rejects-mismatch", "§4.1")
def check_train_rejects_mismatch(h: BackendHarness) -> None:
    """``train`` raises ValueError before the first epoch when the data's N or number of
    patterns per group differ from the config's."""
    me = check_train_rejects_mismatch
    h.require("trains")
    other_N = next(n for n in SUPPORTED_N if n != h.N)
    config = h.training_config()
    data = h.training_data(config)
    cases = [
        (
            config.replace(model=config.model.replace(N=other_N)),
            f"train on N={h.N} data with config.model.N={other_N}",
        ),
        (
            config.replace(
                model=config.model.replace(gridsize=h.gridsize + 1),
                neighbor_count=max(config.neighbor_count, (h.gridsize + 1) ** 2),
            ),
            f"train on gridsize-{h.gridsize} groups with config.model.gridsize={h.gridsize + 1}",
        ),
    ]
    for bad_config, what in cases:
        recorder = HookRecorder()
        expect_raises(
            h,
            me,
            lambda bad_config=bad_config, recorder=recorder: h.backend.train(
                data, bad_config, hooks=recorder.relay()
            ),
            ValueError,
            what,
        )
        if recorder.named("epoch_end"):
            raise fail(
                h, me, f"{what} to fail before the first epoch", "ptycho_epoch_end was called"
            )


@rule_check("infer-rejects-wrong-N", "§4.2")
def check_infer_rejects_wrong_n(h: BackendHarness) -> None:
    """``infer`` raises ValueError for data whose pattern size differs from the model's."""
    me = check_infer_rejects_wrong_n
    model = h.model
    groups = h.groups()
    lo, hi = h.N // 4, h.N // 4 + h.N // 2
    small = groups_with(
        groups,
        diffraction=np.ascontiguousarray(groups.diffraction[:, lo:hi, lo:hi, :]),
        object_patches=None,
    )
    expect_raises(
        h,
        me,
        lambda: h.backend.infer(model, small, h.inference_config(), hooks=HookRecorder().relay()),
        ValueError,
        f"infer with N={h.N // 2} data on an N={h.N} model",
    )


@rule_check("infer-rejects-wrong-gridsize", "§4.2")
def check_infer_rejects_wrong_gridsize(h: BackendHarness) -> None:
    """``infer`` raises ValueError for groups with another number of patterns per group."""
    me = check_infer_rejects_wrong_gridsize
    model = h.model
    groups = h.groups()
    C = groups.channels
    other = 4 if C == 1 else 1
    if other > C:
        reps = other // C
        bad = groups_with(
            groups,
            diffraction=np.ascontiguousarray(np.repeat(groups.diffraction, reps, axis=3)),
            coords_relative=np.ascontiguousarray(np.repeat(groups.coords_relative, reps, axis=3)),
            nn_indices=np.ascontiguousarray(np.repeat(groups.nn_indices, reps, axis=1)),
            object_patches=None,
        )
    else:
        bad = groups_with(
            groups,
            diffraction=np.ascontiguousarray(groups.diffraction[..., :1]),
            coords_relative=np.ascontiguousarray(groups.coords_relative[..., :1]),
            nn_indices=np.ascontiguousarray(groups.nn_indices[:, :1]),
            object_patches=None,
        )
    expect_raises(
        h,
        me,
        lambda: h.backend.infer(model, bad, h.inference_config(), hooks=HookRecorder().relay()),
        ValueError,
        f"infer with {other} patterns per group on a gridsize-{h.gridsize} model",
    )


@rule_check("infer-rejects-foreign-model", "§4.2")
def check_infer_rejects_foreign_model(h: BackendHarness) -> None:
    """``infer`` raises ValueError for a model whose ``backend`` is another name."""
    me = check_infer_rejects_foreign_model
    foreign = foreign_model(h.model)
    expect_raises(
        h,
        me,
        lambda: h.backend.infer(
            foreign, h.groups(), h.inference_config(), hooks=HookRecorder().relay()
        ),
        ValueError,
        f"infer with a model of backend {FOREIGN_BACKEND!r}",
    )


@rule_check("save-rejects-foreign-model", "§4.3")
def check_save_rejects_foreign_model(h: BackendHarness) -> None:
    """``save`` raises ValueError for a model whose ``backend`` is another name, writing
    nothing."""
    me = check_save_rejects_foreign_model
    foreign = foreign_model(h.model)
    path = h.tmp / "foreign-model.ptycho"
    expect_raises(
        h,
        me,
        lambda: h.backend.save(foreign, path),
        ValueError,
        f"save of a model of backend {FOREIGN_BACKEND!r}",
    )
    if path.exists():
        raise fail(h, me, "no file written by the refused save", f"{path} exists")


@rule_check("load-rejects-foreign-bundle", "§4.4")
def check_load_rejects_foreign_bundle(h: BackendHarness) -> None:
    """``load`` of a bundle written by another backend raises BackendMismatchError
    naming both backends."""
    me = check_load_rejects_foreign_bundle
    config = h.training_config(backend=FOREIGN_BACKEND)
    data = h.training_data()
    foreign = TrainedModel(
        backend=FOREIGN_BACKEND,
        config=config,
        probe=data.probe,
        intensity_scale=data.intensity_scale,
        network=None,
        history={"loss": [1.0]},
    )
    path = h.tmp / "foreign.ptycho"

    def payload(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"not for you")

    write_bundle(path, foreign, payload, framework={})
    expect_raises(
        h,
        me,
        lambda: h.backend.load(path),
        BackendMismatchError,
        f"load of a bundle written by backend {FOREIGN_BACKEND!r}",
        must_name=(repr(FOREIGN_BACKEND), repr(h.name)),
    )


@rule_check("load-rejects-corrupt-bundle", "§4.4")
def check_load_rejects_corrupt_bundle(h: BackendHarness) -> None:
    """``load`` raises BundleError for a truncated bundle, a file that is not a bundle
    and a missing file."""
    me = check_load_rejects_corrupt_bundle
    raw = h.bundle.read_bytes()
    truncated = h.tmp / "truncated.ptycho"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = h.tmp / "garbage.ptycho"
    garbage.write_bytes(b"this is not a zip archive\n" * 8)
    missing = h.tmp / "missing.ptycho"
    for path, what in (
        (truncated, "a truncated bundle"),
        (garbage, "a file that is not a zip archive"),
        (missing, "a missing file"),
    ):
        expect_raises(h, me, lambda path=path: h.backend.load(path), BundleError, f"load of {what}")


@rule_check("unknown-option", "§11")
def check_unknown_option(h: BackendHarness) -> None:
    """``train`` (before the first epoch) and ``infer`` raise ValueError naming an option in
    ``backend_options`` that the backend does not declare, instead of ignoring it."""
    me = check_unknown_option
    options = {UNKNOWN_OPTION: 1}
    config = h.training_config(backend_options=options)
    data = h.training_data(config)
    recorder = HookRecorder()
    trains = h.capabilities.get("trains", True)
    # a backend that does not train makes its models by import, which takes the options
    method = "train" if trains else "import_arrays"
    what = f"{method} with TrainingConfig.backend_options={options!r}"

    def run() -> object:
        if trains:
            return h.backend.train(data, config, hooks=recorder.relay())
        arrays = initial_arrays(config.model, data.probe, data.intensity_scale)
        return h.backend.import_arrays(
            arrays, config=config, probe=data.probe, intensity_scale=data.intensity_scale
        )

    expect_raises(h, me, run, ValueError, what, must_name=(UNKNOWN_OPTION,))
    if recorder.named("epoch_end"):
        raise fail(h, me, f"{what} to fail before the first epoch", "ptycho_epoch_end was called")
    model = h.model
    expect_raises(
        h,
        me,
        lambda: h.backend.infer(
            model,
            h.groups(),
            h.inference_config(backend_options=options),
            hooks=HookRecorder().relay(),
        ),
        ValueError,
        f"infer with InferenceConfig.backend_options={options!r}",
        must_name=(UNKNOWN_OPTION,),
    )

"""Checks of one training run: the hooks it calls (start, every epoch, end) and the
TrainedModel it returns (§4.1)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ptycho_core.bundle import json_value
from ptycho_core.testing.checks.support import fail, history_lists, rule_check, same_history, short
from ptycho_core.testing.harness import BackendHarness

__all__ = [
    "check_epoch_end_hook",
    "check_train_end_hook",
    "check_train_start_hook",
    "check_trained_model",
]


@rule_check("train-start-hook", "§4.1")
def check_train_start_hook(h: BackendHarness) -> None:
    """``ptycho_train_start`` is called once, first, with the backend name, the config and
    the number of training groups after the validation split."""
    me = check_train_start_hook
    run = h.trained
    calls = run.recorder.calls
    starts = run.recorder.named("train_start")
    if len(starts) != 1:
        raise fail(h, me, "ptycho_train_start called exactly once", f"{len(starts)} calls")
    if calls[0][0] != "train_start":
        raise fail(h, me, "ptycho_train_start before any other hook", f"first call {calls[0][0]}")
    config = h.training_config()
    train, _ = h.training_data(config).split(config.validation_split)
    args = starts[0]
    expected = {"backend": h.name, "config": config, "n_groups": train.n_groups}
    for key, value in expected.items():
        if args[key] != value or (key == "n_groups" and type(args[key]) is not int):
            shown = "the training config" if key == "config" else repr(value)
            raise fail(
                h,
                me,
                f"{key}={shown} (n_groups: training groups after the validation split)",
                f"{key}={short(args[key])}",
            )


@rule_check("epoch-end-hook", "§4.1")
def check_epoch_end_hook(h: BackendHarness) -> None:
    """``ptycho_epoch_end`` is called after every epoch with ``epoch`` = 0, 1, ...,
    ``nepochs`` = config.nepochs and ``losses`` holding Python floats ``'loss'`` (and
    ``'val_loss'`` when a validation split exists)."""
    me = check_epoch_end_hook
    run = h.trained
    config = h.training_config()
    ends = run.recorder.named("epoch_end")
    if not 1 <= len(ends) <= config.nepochs:
        raise fail(h, me, f"between 1 and {config.nepochs} ptycho_epoch_end calls", f"{len(ends)}")
    epochs = [args["epoch"] for args in ends]
    if epochs != list(range(len(ends))):
        raise fail(h, me, f"epochs {list(range(len(ends)))} (counting from 0)", f"{epochs}")
    for args in ends:
        if args["nepochs"] != config.nepochs:
            raise fail(h, me, f"nepochs={config.nepochs}", f"nepochs={args['nepochs']!r}")
        losses = args["losses"]
        if not isinstance(losses, Mapping) or "loss" not in losses:
            raise fail(h, me, "losses holding 'loss'", short(losses))
        if "val_loss" not in losses:
            raise fail(
                h, me, "'val_loss' in losses (the config holds a validation split)", short(losses)
            )
        for key, value in losses.items():
            if type(value) is not float:
                raise fail(
                    h,
                    me,
                    f"losses[{key!r}] to be a Python float (use float(value))",
                    f"{type(value).__module__}.{type(value).__qualname__} {value!r}",
                )


@rule_check("train-end-hook", "§4.1")
def check_train_end_hook(h: BackendHarness) -> None:
    """``ptycho_train_end`` is called once, last, with ``history`` equal to the returned
    ``TrainedModel.history`` (one value per epoch)."""
    me = check_train_end_hook
    run = h.trained
    calls = run.recorder.calls
    ends = run.recorder.named("train_end")
    if len(ends) != 1:
        raise fail(h, me, "ptycho_train_end called exactly once", f"{len(ends)} calls")
    if calls[-1][0] != "train_end":
        raise fail(h, me, "ptycho_train_end as the last hook", f"last call {calls[-1][0]}")
    history = ends[0]["history"]
    model = h.model
    if not same_history(history, model.history):
        raise fail(
            h,
            me,
            f"history equal to TrainedModel.history {short(history_lists(model.history))}",
            short(history),
        )
    n_epochs = len(run.recorder.named("epoch_end"))
    lengths = {k: len(v) for k, v in (history_lists(history) or {}).items()}
    if any(length != n_epochs for length in lengths.values()):
        raise fail(h, me, f"{n_epochs} values per history entry (one per epoch)", f"{lengths}")


@rule_check("trained-model", "§4.1")
def check_trained_model(h: BackendHarness) -> None:
    """``train`` returns a TrainedModel with this backend's name, the given config, the
    normalised probe as complex64 (N, N), the given intensity scale, a per-epoch history
    with ``'loss'`` and JSON-compatible ``extra``."""
    me = check_trained_model
    h.require("trains")
    model = h.model
    data = h.training_data()
    if model.backend != h.name:
        raise fail(h, me, f"backend={h.name!r}", f"backend={model.backend!r}")
    if model.config != h.training_config():
        raise fail(h, me, "config equal to the training config", short(model.config))
    probe = model.probe
    if (
        not isinstance(probe, np.ndarray)
        or probe.dtype != np.complex64
        or probe.shape != (h.N, h.N)
    ):
        raise fail(
            h,
            me,
            f"probe a complex64 ndarray of shape ({h.N}, {h.N})",
            f"{type(probe).__name__} {getattr(probe, 'dtype', '?')} {getattr(probe, 'shape', '?')}",
        )
    if not np.array_equal(probe, data.probe):
        raise fail(h, me, "probe equal to the normalised probe P̃ it was given", "another probe")
    if model.intensity_scale != data.intensity_scale:
        raise fail(
            h,
            me,
            f"intensity_scale={data.intensity_scale!r} (as given, never recomputed)",
            f"{model.intensity_scale!r}",
        )
    history = history_lists(model.history)
    n_epochs = len(h.trained.recorder.named("epoch_end"))
    if history is None or "loss" not in history:
        raise fail(h, me, "history with per-epoch 'loss' values", short(model.history))
    if len(history["loss"]) != n_epochs:
        raise fail(h, me, f"{n_epochs} 'loss' values (one per epoch)", f"{len(history['loss'])}")
    try:
        json_value(dict(model.extra), "TrainedModel.extra")
    except (ValueError, TypeError) as error:
        raise fail(h, me, "JSON-compatible extra", str(error)) from error

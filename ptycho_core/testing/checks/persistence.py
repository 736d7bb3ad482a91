"""Checks of save and load: the round trip gives the same model back (§4.4) and the bundle's
manifest records it (§4.3, bundle-format.md §2)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ptycho_core.backend_selector import backend_info
from ptycho_core.bundle import FORMAT_NAME, FORMAT_VERSION, json_value, read_manifest
from ptycho_core.config import TrainingConfig
from ptycho_core.protocol import TrainedModel
from ptycho_core.testing.checks.support import (
    fail,
    history_lists,
    rule_check,
    same_history,
    short,
)
from ptycho_core.testing.errors import CheckSkipped
from ptycho_core.testing.harness import BackendHarness

__all__ = ["check_bundle_manifest", "check_save_load_round_trip"]


@rule_check("save-load-round-trip", "§4.4")
def check_save_load_round_trip(h: BackendHarness) -> None:
    """``load(save(model))``, by a fresh backend object, is a TrainedModel of this backend
    whose ``infer`` output is bit-identical to the original model's."""
    me = check_save_load_round_trip
    path = h.bundle
    fresh = h.new_backend()
    loaded = h.call("load", lambda: fresh.load(path), "load(path) to return a TrainedModel")
    if not isinstance(loaded, TrainedModel) or loaded.backend != h.name:
        raise fail(
            h,
            me,
            f"a TrainedModel of backend {h.name!r}",
            f"{type(loaded).__name__} {getattr(loaded, 'backend', '')!r}",
        )
    original = np.asarray(h.inferred.result)
    again = np.asarray(h.infer(h.model).result)
    if original.shape != again.shape or not np.array_equal(original, again):
        raise CheckSkipped(
            "infer is not deterministic (rule 'infer-deterministic'), so the round trip "
            "cannot be compared bit for bit"
        )
    after = np.asarray(h.infer(loaded).result)
    if after.shape != original.shape or not np.array_equal(after, original):
        difference = (
            f"max difference {float(np.max(np.abs(after - original))):.3g}"
            if after.shape == original.shape
            else f"shape {after.shape} instead of {original.shape}"
        )
        raise fail(h, me, "bit-identical infer output after save and load", difference)


@rule_check("bundle-manifest", "§4.3, bundle-format.md §2")
def check_bundle_manifest(h: BackendHarness) -> None:
    """The saved bundle's manifest records the backend, format, N, gridsize, intensity
    scale, config, history and extra of the model, and ``load`` gives them back."""
    me = check_bundle_manifest
    model = h.model
    manifest = read_manifest(h.bundle)
    expected: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": h.name,
        "N": h.N,
        "gridsize": h.gridsize,
        "intensity_scale": float(model.intensity_scale),
        "config": model.config.to_dict(),
        "extra": json_value(dict(model.extra), "extra"),
    }
    if h.selected_by_name:
        expected["distribution"] = backend_info(h.name).distribution
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise fail(h, me, f"manifest {key!r} = {short(value)}", short(manifest.get(key)))
    if TrainingConfig.from_dict(manifest["config"]) != model.config:
        raise fail(h, me, "the manifest config to round-trip to the model's", "another config")
    if not same_history(
        {k: [math.nan if v is None else v for v in vs] for k, vs in manifest["history"].items()},
        model.history,
    ):
        raise fail(
            h,
            me,
            f"manifest history = {short(history_lists(model.history))}",
            short(manifest["history"]),
        )
    loaded = h.call(
        "load", lambda: h.new_backend().load(h.bundle), "load(path) to return a TrainedModel"
    )
    checks = {
        "config": loaded.config == model.config,
        "intensity_scale": loaded.intensity_scale == model.intensity_scale,
        "probe": isinstance(loaded.probe, np.ndarray)
        and loaded.probe.dtype == np.complex64
        and np.array_equal(loaded.probe, model.probe),
        "history": same_history(loaded.history, model.history),
        "extra": json_value(dict(loaded.extra), "extra") == expected["extra"],
    }
    wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        raise fail(
            h,
            me,
            "the loaded model's config, intensity_scale, probe, history and extra equal to "
            "the saved model's",
            f"different {', '.join(wrong)}",
        )

"""Upstream's flat ``params.cfg`` snapshot → our typed configs.

The reverse of :func:`ptycho_core.config.to_legacy_dict`, through the same rename table
(:data:`ptycho_core.config.LEGACY_RENAMES`). Every key of the snapshot falls in exactly
one class, so nothing is defaulted in silence:

- **mapped**: the architecture and the settings both packages share, validated by our
  configs (an invalid value is an error naming the upstream key);
- **required**: settings of upstream's with no counterpart here, accepted only at the value
  under which our model computes the same thing (e.g. ``architecture`` ``'cnn'``, a zero
  total-variation weight); anything else is an error naming the key;
- **ignored**: how the run that produced the archive was carried out (file paths, seeds,
  logging, optimiser and schedule, data sampling) and derived values; they do not change
  what the network computes;
- anything else is unknown and an error, unless the caller lists it in ``ignore``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_core.config import LEGACY_RENAMES, ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError, UpstreamArchiveError

__all__ = [
    "IGNORED_KEYS",
    "MODEL_KEYS",
    "REQUIRED_VALUES",
    "TRAINING_KEYS",
    "UpstreamSettings",
    "settings_from_params",
]

_TO_OURS = {legacy: ours for ours, legacy in LEGACY_RENAMES.items()}

MODEL_KEYS: tuple[str, ...] = (
    "N",
    "gridsize",
    "n_filters_scale",
    "model_type",
    "amp_activation",
    "object.big",
    "probe.big",
    "probe.mask",
    "pad_object",
    "probe_scale",
    "gaussian_smoothing_sigma",
    "offset",
    "max_position_jitter",
)
"""Upstream keys of :class:`ModelConfig` fields."""

TRAINING_KEYS: tuple[str, ...] = (
    "batch_size",
    "nepochs",
    "mae_weight",
    "nll_weight",
    "nphotons",
    "n_groups",
    "neighbor_count",
    "sequential_sampling",
    "probe.trainable",
    "intensity_scale.trainable",
)
"""Upstream keys of :class:`TrainingConfig` fields with the same meaning."""

REQUIRED_VALUES: Mapping[str, Any] = {
    "architecture": "cnn",
    "tv_weight": 0.0,
    "realspace_weight": 0.0,
    "realspace_mae_weight": 0.0,
}
"""Upstream settings ptycho has no counterpart for, and the one value it reproduces."""

IGNORED_KEYS: frozenset[str] = frozenset(
    {
        # where the run read and wrote, and its bookkeeping
        "output_prefix", "train_data_file_path", "test_data_file_path", "model_path",
        "h5_path", "label", "debug", "timestamp", "_version", "backend", "data_source",
        # upstream's simulation and loading of its training data
        "nimgs_train", "nimgs_test", "size", "big_gridsize", "sim_jitter_scale", "npseed",
        "outer_offset_train", "outer_offset_test", "positions.provided", "set_phi",
        "n_images", "n_subsample", "subsample_seed", "enable_oversampling",
        "neighbor_pool_size",
        # derived from other keys, or how upstream's probe was prepared (the stored probe
        # is the result)
        "bigN", "default_probe_scale", "probe_mask_sigma", "probe_mask_diameter",
        "use_xla_translate",
        # the optimiser and schedule of the run (ptycho trains with its own)
        "learning_rate", "optimizer", "momentum", "weight_decay", "adam_beta1", "adam_beta2",
        "scheduler", "lr_warmup_epochs", "lr_min_ratio", "plateau_factor",
        "plateau_patience", "plateau_min_lr", "plateau_threshold", "gradient_clip_val",
        "gradient_clip_algorithm", "torch_loss_mode", "torch_mae_pred_l2_match_target",
        # settings of the generators other than 'cnn' (refused through 'architecture')
        "fno_modes", "fno_width", "fno_blocks", "fno_cnn_blocks", "learned_input_channels",
        "max_hidden_channels", "resnet_width", "fno_input_transform", "generator_output_mode",
    }
)  # fmt: skip
"""Upstream keys that describe the run, not the network (documented in specs)."""

_NOT_SETTINGS = frozenset({"intensity_scale", "probe"})


@dataclass(frozen=True)
class UpstreamSettings:
    """What an upstream configuration snapshot says about its network."""

    config: TrainingConfig
    intensity_scale: float
    probe: np.ndarray | None
    ignored: tuple[str, ...]


def _plain(value: Any) -> Any:
    """numpy scalars (and 0-d arrays) as the Python values our configs validate."""
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def _field(key: str) -> str:
    return _TO_OURS.get(key, key)


def _required(source: str, key: str, value: Any) -> None:
    wanted = REQUIRED_VALUES[key]
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float) or value != wanted:
        raise UpstreamArchiveError(
            f"{source}: key '{key}': ptycho reproduces only {wanted!r}, found {value!r} "
            f"(a network built with it cannot be imported)"
        )


def _intensity_scale(source: str, params: Mapping[str, Any]) -> float:
    if "intensity_scale" not in params:
        raise UpstreamArchiveError(f"{source}: key 'intensity_scale' is missing")
    value = _plain(params["intensity_scale"])
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UpstreamArchiveError(
            f"{source}: key 'intensity_scale': expected a finite number > 0, found {value!r}"
        )
    return float(value)


def _probe(source: str, value: Any, N: int) -> np.ndarray | None:
    if value is None:
        return None
    probe = np.asarray(value)
    if probe.ndim == 3 and probe.shape[-1] == 1:
        probe = probe[..., 0]
    if probe.shape != (N, N) or probe.dtype.kind not in "fc":
        raise UpstreamArchiveError(
            f"{source}: key 'probe': expected an ({N}, {N}) or ({N}, {N}, 1) real or complex "
            f"array for N={N}, found {probe.dtype} {probe.shape}"
        )
    if not np.isfinite(probe).all() or not np.any(probe):
        raise UpstreamArchiveError(f"{source}: key 'probe': expected finite values, not all zero")
    return probe.astype(np.complex64)


def settings_from_params(
    params: Any, source: str, *, backend: str, ignore: Collection[str] = ()
) -> UpstreamSettings:
    """Our configs, s₀ and probe from an upstream ``params`` snapshot (named ``source``).

    ``backend`` is the backend the configs are for; ``ignore`` names unknown keys the
    caller has checked and wants passed over.
    """
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise UpstreamArchiveError(
            f"{source}: expected a dict of settings keyed by name, found {type(params).__name__}"
        )
    model: dict[str, Any] = {}
    training: dict[str, Any] = {}
    ignored = []
    unknown = []
    for key, value in params.items():
        if key in MODEL_KEYS:
            model[_field(key)] = _plain(value)
        elif key in TRAINING_KEYS:
            if value is not None:
                training[_field(key)] = _plain(value)
        elif key in REQUIRED_VALUES:
            _required(source, key, value)
        elif key in IGNORED_KEYS or key in ignore:
            ignored.append(key)
        elif key not in _NOT_SETTINGS:
            unknown.append(key)
    if unknown:
        raise UpstreamArchiveError(
            f"{source}: unknown upstream setting(s) {', '.join(map(repr, sorted(unknown)))}; "
            "ptycho cannot tell whether they change the network (after checking, pass them "
            "to --ignore-setting)"
        )
    for key in ("N", "gridsize"):
        if key not in params:
            raise UpstreamArchiveError(f"{source}: key '{key}' is missing")
    try:
        model_config = ModelConfig.from_dict(model)
        config = TrainingConfig.from_dict({**training, "model": model_config, "backend": backend})
    except ConfigError as error:
        raise UpstreamArchiveError(f"{source}: {_upstream_names(str(error))}") from None
    return UpstreamSettings(
        config=config,
        intensity_scale=_intensity_scale(source, params),
        probe=_probe(source, params.get("probe"), model_config.N),
        ignored=tuple(sorted(ignored)),
    )


def _upstream_names(message: str) -> str:
    """A config error in upstream's key names, so the user finds the setting they wrote."""
    for ours, legacy in LEGACY_RENAMES.items():
        message = message.replace(f".{ours}:", f".{ours} (upstream '{legacy}'):")
    return message

"""Upstream's settings map onto our configs through the legacy-name table, or fail naming the key."""

from __future__ import annotations

import numpy as np
import pytest
from upstream_fixtures import upstream_params

from ptycho_core.config import ModelConfig, TrainingConfig, to_legacy_dict
from ptycho_core.errors import UpstreamArchiveError
from ptycho_core.upstream.params import (
    IGNORED_KEYS,
    MODEL_KEYS,
    TRAINING_KEYS,
    settings_from_params,
)

PROBE = np.full((64, 64, 1), 0.5 + 0.5j, np.complex64)


def _settings(params, **kwargs):
    return settings_from_params(params, "params.dill", backend="tensorflow", **kwargs)


def test_upstreams_snapshot_gives_our_configs() -> None:
    model = ModelConfig(gridsize=2, n_filters_scale=2, probe_big=False, amp_activation="swish")
    params = upstream_params(model, probe=PROBE, nphotons=np.float64(1e6), batch_size=np.int64(32))
    params["intensity_scale"] = np.float32(31.25)
    settings = _settings(params)
    assert settings.config.model == model
    assert settings.config.nphotons == 1e6 and settings.config.batch_size == 32
    assert settings.config.backend == "tensorflow"
    assert settings.intensity_scale == 31.25
    assert settings.probe.shape == (64, 64) and settings.probe.dtype == np.complex64
    assert "output_prefix" in settings.ignored


def test_the_mapping_is_to_legacy_dict_in_reverse() -> None:
    config = TrainingConfig(
        model=ModelConfig(gridsize=2, object_big=False, probe_mask=True, offset=6),
        nphotons=1e7,
        probe_trainable=True,
        intensity_scale_trainable=False,
        neighbor_count=7,
    )
    legacy = to_legacy_dict(config)
    params = {key: legacy[key] for key in (*MODEL_KEYS, *TRAINING_KEYS) if key in legacy}
    settings = _settings({**params, "intensity_scale": 10.0})
    assert settings.config.model == config.model
    for field in ("nphotons", "probe_trainable", "intensity_scale_trainable", "neighbor_count"):
        assert getattr(settings.config, field) == getattr(config, field)
    assert settings.probe is None


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("architecture", "fno", "key 'architecture': ptycho reproduces only 'cnn', found 'fno'"),
        ("tv_weight", 0.1, "key 'tv_weight': ptycho reproduces only 0.0, found 0.1"),
        ("realspace_weight", True, "key 'realspace_weight'"),
        ("N", 100, "ModelConfig.N: expected one of 64, 128, 256, found 100"),
        ("probe.big", "yes", "probe_big (upstream 'probe.big')"),
        ("intensity_scale", -1.0, "key 'intensity_scale': expected a finite number > 0"),
        ("probe", np.ones((32, 32)), "key 'probe': expected an (64, 64) or (64, 64, 1)"),
        ("probe", np.zeros((64, 64)), "key 'probe': expected finite values, not all zero"),
        ("fancy_new_setting", 3, "unknown upstream setting(s) 'fancy_new_setting'"),
    ],
)
def test_what_cannot_be_represented_is_an_error_naming_the_key(key, value, message) -> None:
    params = upstream_params(ModelConfig(), probe=PROBE, intensity_scale=988.0)
    params[key] = value
    with pytest.raises(UpstreamArchiveError, match=r"^params\.dill: ") as error:
        _settings(params)
    assert message in str(error.value)


def test_an_unknown_setting_the_user_checked_is_passed_over() -> None:
    params = upstream_params(ModelConfig(), probe=PROBE, intensity_scale=988.0, fancy=1)
    assert "fancy" in _settings(params, ignore=["fancy"]).ignored


@pytest.mark.parametrize("key", ["N", "gridsize", "intensity_scale"])
def test_missing_essentials_are_named(key) -> None:
    params = upstream_params(ModelConfig(), probe=PROBE, intensity_scale=988.0)
    del params[key]
    with pytest.raises(UpstreamArchiveError, match=f"key '{key}' is missing"):
        _settings(params)


def test_the_key_classes_do_not_overlap() -> None:
    assert not set(MODEL_KEYS) & set(TRAINING_KEYS)
    assert not (set(MODEL_KEYS) | set(TRAINING_KEYS)) & IGNORED_KEYS

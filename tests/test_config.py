"""Configs: validation on construction, JSON round trip, the pure legacy mapping."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.config import (
    AMP_ACTIVATIONS,
    SUPPORTED_N,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
    to_legacy_dict,
)

model_configs = st.builds(
    ModelConfig,
    N=st.sampled_from(SUPPORTED_N),
    gridsize=st.integers(1, 4),
    n_filters_scale=st.integers(1, 4),
    model_type=st.sampled_from(("pinn", "supervised")),
    amp_activation=st.sampled_from(AMP_ACTIVATIONS),
    object_big=st.booleans(),
    probe_big=st.booleans(),
    probe_mask=st.booleans(),
    pad_object=st.booleans(),
    probe_scale=st.floats(0.1, 100, allow_nan=False),
    gaussian_smoothing_sigma=st.floats(0, 5, allow_nan=False),
    offset=st.integers(0, 16),
    max_position_jitter=st.integers(0, 20),
)


@st.composite
def training_configs(draw: st.DrawFn) -> TrainingConfig:
    model = draw(model_configs)
    lr = draw(st.floats(1e-5, 1e-1))
    return TrainingConfig(
        model=model,
        backend=draw(st.sampled_from(("tensorflow", "pytorch", "numpy-gain"))),
        nepochs=draw(st.integers(1, 500)),
        batch_size=2 ** draw(st.integers(0, 10)),
        learning_rate=lr,
        min_learning_rate=lr * draw(st.floats(0.001, 1.0)),
        nphotons=draw(st.floats(1.0, 1e12)),
        n_groups=draw(st.none() | st.integers(1, 10_000)),
        neighbor_count=draw(st.integers(model.channels, model.channels + 8)),
        mae_weight=draw(st.floats(0, 1)),
        nll_weight=draw(st.floats(0.01, 1)),
        validation_split=draw(st.floats(0, 0.99)),
        seed=draw(st.integers(0, 2**31)),
        devices=draw(st.sampled_from(("auto", 1, 2, 8))),
    )


@given(training_configs())
@settings(max_examples=60, deadline=None)
def test_training_config_json_round_trip(config: TrainingConfig) -> None:
    assert TrainingConfig.from_json(config.to_json()) == config
    assert TrainingConfig.from_dict(json.loads(config.to_json())) == config


@given(model_configs)
@settings(max_examples=40, deadline=None)
def test_model_config_round_trip_and_derived_sizes(model: ModelConfig) -> None:
    assert ModelConfig.from_json(model.to_json()) == model
    assert model.channels == model.gridsize**2
    assert (
        model.canvas_size
        == model.N + (model.gridsize - 1) * model.offset + model.max_position_jitter
    )


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (ModelConfig, "N", 65),
        (ModelConfig, "N", True),
        (ModelConfig, "gridsize", 0),
        (ModelConfig, "gridsize", 1.5),
        (ModelConfig, "amp_activation", "tanh"),
        (ModelConfig, "model_type", "gan"),
        (ModelConfig, "probe_scale", 0.0),
        (ModelConfig, "probe_scale", math.nan),
        (ModelConfig, "object_big", 1),
        (TrainingConfig, "batch_size", 24),
        (TrainingConfig, "nepochs", 0),
        (TrainingConfig, "nll_weight", 1.5),
        (TrainingConfig, "mae_weight", -0.1),
        (TrainingConfig, "validation_split", 1.0),
        (TrainingConfig, "nphotons", math.inf),
        (TrainingConfig, "n_groups", 0),
        (TrainingConfig, "backend", ""),
        (TrainingConfig, "precision", "16"),
        (TrainingConfig, "devices", 0),
        (InferenceConfig, "stitch_size", 0),
        (InferenceConfig, "backend", "  "),
        (InferenceConfig, "devices", "many"),
    ],
)
def test_invalid_field_names_the_field(cls: type, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.{field}: expected .* found"):
        cls(**{field: value})


@given(st.integers(-5, 2000).filter(lambda n: n <= 0 or n & (n - 1)))
@settings(max_examples=30, deadline=None)
def test_batch_size_must_be_power_of_two(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=batch_size)


def test_cross_field_rules() -> None:
    with pytest.raises(ValueError, match="neighbor_count"):
        TrainingConfig(model=ModelConfig(gridsize=2), neighbor_count=3)
    with pytest.raises(ValueError, match="nll_weight"):
        TrainingConfig(mae_weight=0.0, nll_weight=0.0)
    with pytest.raises(ValueError, match="min_learning_rate"):
        TrainingConfig(learning_rate=1e-4, min_learning_rate=1e-3)


def test_configs_are_frozen_and_replace_revalidates() -> None:
    config = TrainingConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.nepochs = 3  # type: ignore[misc]
    assert config.replace(nepochs=3).nepochs == 3
    with pytest.raises(ValueError, match="nepochs"):
        config.replace(nepochs=-1)


def test_training_defaults_to_tensorflow_like_upstream_and_inference_to_the_model() -> None:
    assert TrainingConfig().backend == "tensorflow"
    assert InferenceConfig().backend is None  # the model knows its backend


def test_silu_is_an_alias_of_swish() -> None:
    assert ModelConfig(amp_activation="silu").amp_activation == "swish"


def test_from_dict_rejects_unknown_keys_and_non_mappings() -> None:
    with pytest.raises(ValueError, match=r"unknown field.*'epochs'"):
        TrainingConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match=r"unknown field.*'gridsize2'"):
        TrainingConfig.from_dict({"model": {"gridsize2": 2}})
    with pytest.raises(ValueError, match="expected a mapping"):
        ModelConfig.from_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid JSON"):
        InferenceConfig.from_json("{not json")


def test_to_legacy_dict_uses_upstream_names_and_is_pure() -> None:
    config = TrainingConfig(
        model=ModelConfig(gridsize=2, object_big=False),
        probe_trainable=True,
        output_dir="out",
        train_data_file="train.npz",
    )
    legacy = to_legacy_dict(config, intensity_scale=988.2)
    assert legacy["object.big"] is False
    assert legacy["probe.big"] is True
    assert legacy["probe.trainable"] is True
    assert legacy["intensity_scale.trainable"] is True
    assert legacy["output_prefix"] == "out"
    assert legacy["train_data_file_path"] == "train.npz"
    assert legacy["gridsize"] == 2 and legacy["N"] == 64
    assert legacy["nepochs"] == 50 and legacy["intensity_scale"] == 988.2
    assert "test_data_file_path" not in legacy  # None values are left out, as upstream does
    assert "model" not in legacy and "object_big" not in legacy
    legacy["N"] = 128  # mutating the result changes nothing else
    assert to_legacy_dict(config)["N"] == 64
    with pytest.raises(TypeError):
        to_legacy_dict({"N": 64})  # type: ignore[arg-type]


def test_field_docs_cover_every_field() -> None:
    for cls in (ModelConfig, TrainingConfig, InferenceConfig):
        docs = cls.field_docs()
        assert set(docs) == {f.name for f in dataclasses.fields(cls)}
        assert all(docs.values()), cls

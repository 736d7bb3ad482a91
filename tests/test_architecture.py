"""The framework-free numbers both backends build the network from (ptycho_core.architecture)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_core.architecture import (
    GENERATOR_PARAMETERS,
    activation_name,
    check_buildable,
    decoder_filters,
    encoder_filters,
    initial_arrays,
    initial_log_gain,
    neutral_shapes,
    outer_filters,
)
from ptycho_core.config import AMP_ACTIVATIONS, SUPPORTED_N, ModelConfig
from ptycho_core.physics import default_probe


def test_filter_plans_are_model_and_physics_section_3() -> None:
    assert encoder_filters(64, 2) == [64, 128, 256]
    assert encoder_filters(256, 1) == [8, 16, 32, 64, 128]
    assert decoder_filters(64, 2) == [128, 64]
    assert decoder_filters(128, 2) == [256, 128, 64]
    assert outer_filters(64, 2) == 64 and outer_filters(256, 2) == 16


@given(N=st.sampled_from(SUPPORTED_N), scale=st.integers(1, 8))
def test_encoder_doubles_and_decoder_halves_one_block_per_octave_of_n(N, scale) -> None:
    encoder, decoder = encoder_filters(N, scale), decoder_filters(N, scale)
    levels = (N // 8).bit_length() - 1  # log2(N / 8): down to the 8×8 bottleneck
    assert len(encoder) == levels and len(decoder) == levels - 1
    assert all(b == 2 * a for a, b in itertools.pairwise(encoder))
    assert all(a == 2 * b for a, b in itertools.pairwise(decoder))
    assert encoder[-1] == 128 * scale and decoder[-1] == 32 * scale
    assert outer_filters(N, scale) * N == 2048 * scale


@pytest.mark.parametrize("plan", [encoder_filters, decoder_filters, outer_filters])
def test_unsupported_sizes_are_refused(plan) -> None:
    with pytest.raises(ValueError, match="N: expected one of 64, 128, 256, found 96"):
        plan(96, 2)


def test_activation_names_resolve_aliases_and_list_the_known_ones() -> None:
    assert [activation_name(n) for n in AMP_ACTIVATIONS] == list(AMP_ACTIVATIONS)
    assert activation_name("silu") == "swish"
    with pytest.raises(ValueError, match=r"expected one of relu, sigmoid, silu, softplus, swish"):
        activation_name("tanh")


def test_parameter_table_covers_every_size_at_both_gridsizes() -> None:
    assert set(GENERATOR_PARAMETERS) == {(N, g) for N in SUPPORTED_N for g in (1, 2)}
    for N in SUPPORTED_N:  # gridsize only widens the input layer and the heads
        assert 0 < GENERATOR_PARAMETERS[(N, 2)] - GENERATOR_PARAMETERS[(N, 1)] < 10_000


def test_a_supervised_model_with_groups_must_merge_its_patches() -> None:
    check_buildable(ModelConfig(gridsize=2, model_type="supervised"))
    check_buildable(ModelConfig(gridsize=1, model_type="supervised", object_big=False))
    with pytest.raises(ValueError, match=r"ModelConfig\.object_big: expected True"):
        check_buildable(ModelConfig(gridsize=2, model_type="supervised", object_big=False))


def test_neutral_shapes_count_the_documented_parameters() -> None:
    """45 arrays for N 64, gridsize 1; at n_filters_scale 2 the model.md §3.5 count + the gain."""
    for (N, gridsize), parameters in GENERATOR_PARAMETERS.items():
        shapes = neutral_shapes(ModelConfig(N=N, gridsize=gridsize, n_filters_scale=2))
        assert sum(math.prod(shape) for shape in shapes.values()) == parameters + 1
    shapes = neutral_shapes(ModelConfig())
    assert len(shapes) == 45 and shapes["log_gain"] == ()
    assert shapes["encoder.blocks.0.conv0.kernel"] == (3, 3, 1, 32)
    assert "probe.real" in neutral_shapes(ModelConfig(), probe_trainable=True)


@given(
    gridsize=st.integers(1, 3),
    scale=st.integers(1, 3),
    pad_object=st.booleans(),
    probe_big=st.booleans(),
    probe_trainable=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_initial_arrays_fill_every_shape_as_a_new_network_starts(
    gridsize, scale, pad_object, probe_big, probe_trainable, seed
) -> None:
    config = ModelConfig(
        gridsize=gridsize, n_filters_scale=scale, pad_object=pad_object, probe_big=probe_big
    )
    probe = default_probe(64).astype(np.complex64)
    arrays = initial_arrays(config, probe, 1000.0, seed=seed, probe_trainable=probe_trainable)
    shapes = neutral_shapes(config, probe_trainable=probe_trainable)
    assert {name: array.shape for name, array in arrays.items()} == shapes
    assert all(array.dtype == np.float32 for array in arrays.values())
    for name, array in arrays.items():
        if name.endswith(".bias"):
            assert not array.any()
        elif name.endswith(".kernel"):
            kh, kw, c_in, c_out = array.shape
            limit = math.sqrt(6.0 / (kh * kw * (c_in + c_out)))
            assert np.abs(array).max() <= limit and array.std() > limit / 4  # Glorot uniform
    assert float(arrays["log_gain"]) == pytest.approx(initial_log_gain(config, probe, 1000.0))
    if probe_trainable:
        np.testing.assert_array_equal(arrays["probe.real"] + 1j * arrays["probe.imag"], probe)
    again = initial_arrays(config, probe, 1000.0, seed=seed, probe_trainable=probe_trainable)
    assert all(np.array_equal(again[name], array) for name, array in arrays.items())

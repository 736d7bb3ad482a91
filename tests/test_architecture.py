"""The framework-free numbers both backends build the network from (ptycho_core.architecture)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptycho_core.architecture import (
    GENERATOR_PARAMETERS,
    activation_name,
    check_buildable,
    decoder_filters,
    encoder_filters,
    outer_filters,
)
from ptycho_core.config import AMP_ACTIVATIONS, SUPPORTED_N, ModelConfig


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

"""The network's inference path after the generator, in numpy (ptycho_core.object_patches).

The framework networks compute it inside (tests/cross_backend/test_cross_onnx.py holds the
three runtimes to one another); these properties hold without any framework.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptycho_core.config import ModelConfig
from ptycho_core.object_patches import group_offsets, merge_patches, object_patches, shift_matrices
from ptycho_core.physics import MERGE_EPSILON, canvas_padding, center_mask_1d

N = 64
floats = st.floats(-6, 6, allow_nan=False, width=32)


def generator_output(seed: int, batch: int, heads: int):
    rng = np.random.default_rng(seed)
    amplitude = rng.random((batch, N, N, heads), dtype=np.float32)
    phase = rng.uniform(-np.pi, np.pi, (batch, N, N, heads)).astype(np.float32)
    return amplitude, phase


@given(shift=st.lists(floats, min_size=1, max_size=4), start=st.integers(-8, 8))
def test_shift_matrices_interpolate_bilinearly(shift, start) -> None:
    matrices = shift_matrices(np.array(shift, np.float32), 16, 20, start)
    assert matrices.shape == (len(shift), 20, 16) and matrices.dtype == np.float32
    assert matrices.min() >= 0 and matrices.max() <= 1
    # every output row inside the input samples two neighbours whose weights sum to one
    for m, s in enumerate(shift):
        for o in range(20):
            position = o + start - s
            if 0 <= position <= 15:
                assert abs(matrices[m, o].sum() - 1) < 1e-5


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), shift=hnp.arrays(np.float32, (2,), elements=floats))
def test_one_pattern_per_group_is_its_patch_over_the_centre_mask(seed, shift) -> None:
    """gridsize 1: the merge of one patch, at offset 0 whatever its position, divides it by
    its own centre mask plus ε (the shortcut equals the general merge)."""
    amplitude, phase = generator_output(seed, 3, 1)
    coords = np.broadcast_to(shift.reshape(1, 1, 2, 1), (3, 1, 2, 1))
    config = ModelConfig()
    found = object_patches(amplitude, phase, coords, config)
    patches = np.transpose(amplitude * np.exp(1j * phase), (0, 3, 1, 2)).astype(np.complex64)
    P = config.canvas_size
    begin = canvas_padding(N, P)
    merged = merge_patches(patches, group_offsets(coords), P)[
        :, begin : begin + N, begin : begin + N
    ]
    np.testing.assert_allclose(found[..., 0], merged, rtol=1e-5, atol=1e-6)
    mask = center_mask_1d(N)
    expected = patches[:, 0] / (np.outer(mask, mask) + MERGE_EPSILON)
    np.testing.assert_allclose(found[..., 0], expected, rtol=1e-5)
    assert found.shape == (3, N, N, 1) and found.dtype == np.complex64


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), common=hnp.arrays(np.float32, (2,), elements=floats))
def test_a_group_moved_as_a_whole_gives_the_same_object(seed, common) -> None:
    """Only the offsets from the group's mean position matter (gridsize 2)."""
    config = ModelConfig(gridsize=2)
    amplitude, phase = generator_output(seed, 2, 4)
    rng = np.random.default_rng(seed)
    coords = rng.normal(0, 3, (2, 1, 2, 4)).astype(np.float32)
    moved = coords + common.reshape(1, 1, 2, 1)
    first = object_patches(amplitude, phase, coords, config)
    again = object_patches(amplitude, phase, moved, config)
    # the float32 offsets of the moved group differ by round-off (~1e-7 of a coordinate),
    # which the free field's 1 / (Σ mask + ε) amplifies up to 1000×: 1e-4 was found too tight
    np.testing.assert_allclose(again, first, rtol=1e-3, atol=1e-5 * np.abs(first).max())
    # four copies of one patch at offset 0: the box holds 4·patch / (4 + ε)
    still = np.zeros_like(coords)
    same_amp, same_phase = np.repeat(amplitude[..., :1], 4, -1), np.repeat(phase[..., :1], 4, -1)
    merged = object_patches(same_amp, same_phase, still, config)
    inner = np.s_[:, 16:48, 16:48, 0]
    patch = (amplitude[..., 0] * np.exp(1j * phase[..., 0]))[:, 16:48, 16:48]
    np.testing.assert_allclose(merged[inner], 4 * patch / (4 + MERGE_EPSILON), rtol=1e-5)


def test_without_object_big_the_single_head_is_the_object() -> None:
    config = ModelConfig(gridsize=2, object_big=False)
    amplitude, phase = generator_output(0, 2, 1)
    coords = np.random.default_rng(0).normal(0, 3, (2, 1, 2, 4)).astype(np.float32)
    found = object_patches(amplitude, phase, coords, config)
    np.testing.assert_allclose(
        found, (amplitude * np.exp(1j * phase)).astype(np.complex64), rtol=1e-6
    )

"""The data mapping: counts → amplitudes, bad pixels, metres → object pixels, probe modes.

The geometry is checked against Ptychodus's own forward model and its own coordinate
methods, not against a restatement of our formula.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from helpers_ptychodus import to_ptychodus
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from ptychodus.api.object import Object
from ptychodus.api.product import Product
from ptychodus.api.reconstruct import ReconstructInput
from ptychodus.api.simulate.diffraction import generate_diffraction_data

from ptycho_core import physics
from ptycho_core.data import load_npz, save_npz
from ptycho_core.errors import DataContractError
from ptycho_core.geometry import extract_patches
from ptycho_core.simulate import SimulationConfig, simulate
from ptycho_ptychodus.mapping import (
    first_probe_mode,
    inpaint_bad_pixels,
    intensities_to_amplitudes,
    map_reconstruct_input,
    mean_photons_per_pattern,
    object_pixels_to_positions,
    positions_to_object_pixels,
)

# ----------------------------------------------------------------------------- inpainting

masks = hnp.arrays(bool, st.tuples(st.integers(3, 9), st.integers(3, 9)))


@st.composite
def patterns_and_mask(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    mask = draw(masks.filter(lambda m: not m.all()))
    n = draw(st.integers(1, 3))
    values = hnp.arrays(
        np.float64, (n, *mask.shape), elements=st.floats(0, 1e6, allow_subnormal=False)
    )
    return draw(values), mask


@settings(max_examples=60, deadline=None)
@given(patterns_and_mask())
def test_inpainting_keeps_good_pixels_and_obeys_the_maximum_principle(case) -> None:
    patterns, mask = case
    filled = inpaint_bad_pixels(patterns, mask)
    assert filled.dtype == np.float64 and filled.shape == patterns.shape
    np.testing.assert_array_equal(filled[:, ~mask], patterns[:, ~mask])
    good = patterns[:, ~mask]
    low, high = good.min(axis=1), good.max(axis=1)
    span = np.maximum(np.abs(high), 1.0) * 1e-9  # round-off of the sparse solve
    assert np.all(filled[:, mask] >= (low - span)[:, None])
    assert np.all(filled[:, mask] <= (high + span)[:, None])


@settings(max_examples=60, deadline=None)
@given(masks.filter(lambda m: not m.all()), st.floats(-5, 5), st.floats(-5, 5), st.floats(-50, 50))
def test_inpainting_reproduces_a_linear_pattern_away_from_the_border(mask, a, b, c) -> None:
    H, W = mask.shape
    interior = np.zeros_like(mask)
    interior[1:-1, 1:-1] = mask[1:-1, 1:-1]
    if not interior.any():
        return
    rows, cols = np.mgrid[:H, :W]
    plane = (a * rows + b * cols + c)[None].astype(np.float64)
    filled = inpaint_bad_pixels(plane, interior)
    np.testing.assert_allclose(filled, plane, atol=1e-9 * (1 + np.abs(plane).max()))


def test_inpainting_a_single_pixel_takes_the_mean_of_its_four_neighbours() -> None:
    pattern = np.arange(25, dtype=np.float64).reshape(1, 5, 5) ** 2
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 2] = True
    filled = inpaint_bad_pixels(pattern, mask)
    expected = (pattern[0, 1, 2] + pattern[0, 3, 2] + pattern[0, 2, 1] + pattern[0, 2, 3]) / 4
    assert filled[0, 2, 2] == pytest.approx(expected)
    assert filled[0, 2, 2] != pattern[0, 2, 2]


def test_inpainting_refuses_a_mask_with_no_good_pixel() -> None:
    with pytest.raises(DataContractError, match="every pixel marked bad"):
        inpaint_bad_pixels(np.ones((1, 4, 4)), np.ones((4, 4), dtype=bool))


def test_intensities_become_square_roots_with_negatives_clipped() -> None:
    counts = np.array([[[4, 9], [-2, 16]]], dtype=np.int32)
    amplitudes, n_bad, n_negative = intensities_to_amplitudes(counts, None)
    assert amplitudes.dtype == np.float32
    np.testing.assert_array_equal(amplitudes, [[[2, 3], [0, 4]]])
    assert (n_bad, n_negative) == (0, 1)
    with pytest.raises(DataContractError, match="NaN/inf"):
        intensities_to_amplitudes(np.array([[[np.nan, 1.0]]]), None)


# ----------------------------------------------------------------------------- geometry


def _small_dataset(seed: int = 3):
    config = SimulationConfig(N=64, n_positions=24, step=9.0, nphotons=1e6, seed=seed)
    return simulate(config)


def test_positions_round_trip_and_agree_with_ptychodus_own_object_pixels(small_test) -> None:
    data = to_ptychodus(small_test)
    geometry = data.product.object_.get_geometry()
    x, y = positions_to_object_pixels(data.product.probe_positions, geometry)
    np.testing.assert_allclose(x, small_test.xcoords, atol=1e-9)
    np.testing.assert_allclose(y, small_test.ycoords, atol=1e-9)
    x_m, y_m = object_pixels_to_positions(x, y, geometry)
    np.testing.assert_allclose(x_m, data.product.probe_positions.get_coordinates_x_m(), rtol=1e-12)
    np.testing.assert_allclose(y_m, data.product.probe_positions.get_coordinates_y_m(), rtol=1e-12)
    # Ptychodus >= 1.6 counts object pixels from the centred-pixel frame ((W-1)/2) and
    # anchors a patch on its pixel (N-1)/2; ptycho anchors on N/2: half a pixel apart.
    theirs_x = geometry.map_probe_positions_to_object_x_px(data.product.probe_positions)
    theirs_y = geometry.map_probe_positions_to_object_y_px(data.product.probe_positions)
    np.testing.assert_allclose(x, theirs_x + 0.5, atol=1e-9)
    np.testing.assert_allclose(y, theirs_y + 0.5, atol=1e-9)


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    return float(np.linalg.norm(a - b))


def test_ptychodus_forward_model_matches_ptycho_physics_at_the_mapped_positions() -> None:
    """Ptychodus simulates patterns from its product; ptycho's physics at the positions the
    adapter computes must give the same patterns (a half-pixel error would not)."""
    data = _small_dataset()
    N = data.N
    # Positions on whole object pixels in ptycho's frame (half pixels in Ptychodus's),
    # so neither side interpolates.
    x = np.round(data.xcoords)
    y = np.round(data.ycoords)
    exact = data.__class__(
        diffraction=data.diffraction[: x.size],
        xcoords=x,
        ycoords=y,
        probe=data.probe,
        object=data.object,
        source="exact",
    )
    product = to_ptychodus(exact, initial_object="truth").product
    simulated = generate_diffraction_data(product).get_patterns()
    x_mapped, y_mapped = positions_to_object_pixels(
        product.probe_positions, product.object_.get_geometry()
    )
    ours = (
        physics.diffraction_amplitude(
            extract_patches(data.object, x_mapped, y_mapped, N), data.probe.astype(np.complex128)
        )
        ** 2
    )
    wrong = (
        physics.diffraction_amplitude(
            extract_patches(data.object, x_mapped - 0.5, y_mapped - 0.5, N),
            data.probe.astype(np.complex128),
        )
        ** 2
    )
    good = np.mean([_relative_error(s, o) for s, o in zip(simulated, ours, strict=True)])
    bad = np.mean([_relative_error(s, w) for s, w in zip(simulated, wrong, strict=True)])
    assert good < 0.02, good
    assert bad > 5 * good, (good, bad)


# ----------------------------------------------------------------------------- whole input


def _input(data, **kwargs) -> ReconstructInput:
    pty = to_ptychodus(data, **kwargs)
    return ReconstructInput(
        pty.assembled.get_patterns(), pty.assembled.get_bad_pixels(), pty.product
    )


def test_mapped_input_holds_amplitudes_positions_probe_and_photons(small_test) -> None:
    mapped = map_reconstruct_input(_input(small_test), include_object=False)
    data = mapped.data
    counts = np.rint(small_test.diffraction.astype(np.float64) ** 2)
    np.testing.assert_allclose(data.diffraction, np.sqrt(counts), rtol=1e-6)
    np.testing.assert_allclose(data.xcoords, small_test.xcoords, atol=1e-9)
    np.testing.assert_array_equal(data.probe, small_test.probe)
    assert data.object is None
    assert mapped.object_shape == small_test.object.shape
    assert mean_photons_per_pattern(data.diffraction) == pytest.approx(
        counts.sum(axis=(1, 2)).mean(), rel=1e-6
    )


def test_bad_pixels_are_inpainted_before_the_square_root(small_test, captured) -> None:
    mask = np.zeros((64, 64), dtype=bool)
    mask[10:12, 40:43] = True
    pty = to_ptychodus(small_test, bad_pixels=mask)
    patterns = pty.assembled.get_patterns().copy()
    patterns[:, mask] = 10**6  # hot pixels: must not survive
    parameters = ReconstructInput(patterns, mask, pty.product)
    mapped = map_reconstruct_input(parameters)
    mapped.log_summary(logging.getLogger("ptycho_ptychodus"))
    expected = np.sqrt(inpaint_bad_pixels(patterns, mask))
    np.testing.assert_allclose(mapped.data.diffraction, expected, rtol=1e-6)
    assert mapped.data.diffraction[:, mask].max() < 10**3
    assert mapped.n_bad_pixels == 6
    assert "inpainted 6 bad detector pixels" in captured.text()


def test_probe_mode_zero_is_used_and_dropped_power_is_reported(small_test, captured) -> None:
    second = np.roll(small_test.probe, 3, axis=1).astype(np.complex128) * 0.5
    modes = np.stack([small_test.probe.astype(np.complex128), second])
    mapped = map_reconstruct_input(_input(small_test, probe_modes=modes))
    np.testing.assert_array_equal(mapped.data.probe, small_test.probe)
    expected = 0.25 / 1.25
    assert mapped.dropped_mode_power == pytest.approx(expected, rel=1e-6)
    mapped.log_summary(logging.getLogger("ptycho_ptychodus"))
    assert "probe mode 0 only; the other modes carry 20.0%" in captured.text(logging.WARNING)
    probe, dropped = first_probe_mode(modes[:1])
    assert dropped == 0.0 and probe.shape == (64, 64)


def test_non_square_patterns_are_refused_with_what_to_do(small_test) -> None:
    pty = to_ptychodus(small_test)
    patterns = pty.assembled.get_patterns()[:, :, :48]
    parameters = ReconstructInput(patterns, np.zeros((64, 48), dtype=bool), pty.product)
    with pytest.raises(DataContractError, match=r"expected square N×N patterns.*found 64×48.*crop"):
        map_reconstruct_input(parameters)


def test_unsupported_pattern_sizes_are_refused(small_test) -> None:
    pty = to_ptychodus(small_test)
    patterns = pty.assembled.get_patterns()[:, :48, :48]
    parameters = ReconstructInput(patterns, np.zeros((48, 48), dtype=bool), pty.product)
    with pytest.raises(DataContractError, match=r"expected N = 64, 128, 256.*found 48×48"):
        map_reconstruct_input(parameters)


def test_mapped_input_with_object_saves_as_a_contract_npz(tmp_path, small_test) -> None:
    mapped = map_reconstruct_input(_input(small_test, initial_object="truth"), include_object=True)
    path = tmp_path / "train_data.npz"
    save_npz(mapped.data, path)
    loaded = load_npz(path)
    np.testing.assert_array_equal(loaded.object, small_test.object)
    np.testing.assert_array_equal(loaded.diffraction, mapped.data.diffraction)
    counts = np.rint(small_test.diffraction.astype(np.float64) ** 2)
    assert mean_photons_per_pattern(loaded.diffraction) == pytest.approx(
        counts.sum(axis=(1, 2)).mean(), rel=1e-6
    )


def test_object_is_left_out_when_the_scan_leaves_it(small_test, captured) -> None:
    pty = to_ptychodus(small_test, initial_object="truth")
    small = pty.product.object_.get_layer(0)[:60, :60]
    obj = Object(
        array=small,
        pixel_geometry=pty.product.object_.get_pixel_geometry(),
        center=pty.product.object_.get_center(),
    )
    product = Product(
        metadata=pty.product.metadata,
        probe_positions=pty.product.probe_positions,
        probes=pty.product.probes,
        object_=obj,
        losses=[],
    )
    parameters = ReconstructInput(
        pty.assembled.get_patterns(), pty.assembled.get_bad_pixels(), product
    )
    mapped = map_reconstruct_input(parameters, include_object=True)
    assert mapped.data.object is None
    assert "exporting without objectGuess" in captured.text(logging.WARNING)

"""The pixel convention: translation direction, patch extraction, sub-pixel interpolation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.geometry import extract_patches, translate


@given(
    r0=st.integers(2, 13),
    c0=st.integers(2, 17),
    dy=st.integers(-2, 2),
    dx=st.integers(-2, 2),
)
@settings(max_examples=50, deadline=None)
def test_translate_moves_a_delta_by_dx_columns_and_dy_rows(
    r0: int, c0: int, dy: int, dx: int
) -> None:
    image = np.zeros((16, 20))
    image[r0, c0] = 1.0
    moved = translate(image, dx, dy)
    assert np.argwhere(moved == 1.0).tolist() == [[r0 + dy, c0 + dx]]
    assert moved.sum() == pytest.approx(1.0)


@given(frac=st.floats(0.0, 0.999), along_rows=st.booleans())
@settings(max_examples=30, deadline=None)
def test_translate_sub_pixel_splits_a_delta_bilinearly(frac: float, along_rows: bool) -> None:
    image = np.zeros((8, 8))
    image[3, 3] = 1.0
    moved = translate(image, 0.0 if along_rows else frac, frac if along_rows else 0.0)
    first, second = (moved[3, 3], moved[4, 3]) if along_rows else (moved[3, 3], moved[3, 4])
    assert first == pytest.approx(1 - frac, abs=1e-12)
    assert second == pytest.approx(frac, abs=1e-12)


@given(
    x=st.integers(4, 27),
    y=st.integers(4, 19),
    n=st.sampled_from([4, 8]),
)
@settings(max_examples=40, deadline=None)
def test_integer_positions_extract_exact_slices(x: int, y: int, n: int) -> None:
    rng = np.random.default_rng(x * 100 + y)
    image = rng.standard_normal((24, 32)) + 1j * rng.standard_normal((24, 32))
    patch = extract_patches(image, [x], [y], n)[0]
    half = n // 2
    expected = np.zeros((n, n), dtype=complex)
    rows = np.arange(y - half, y + half)
    cols = np.arange(x - half, x + half)
    inside_r = (rows >= 0) & (rows < 24)
    inside_c = (cols >= 0) & (cols < 32)
    expected[np.ix_(inside_r, inside_c)] = image[np.ix_(rows[inside_r], cols[inside_c])]
    np.testing.assert_allclose(patch, expected, atol=1e-6)
    assert patch[half, half] == pytest.approx(image[y, x], abs=1e-6)


def test_sub_pixel_extraction_of_a_linear_ramp_is_exact() -> None:
    rows, cols = np.mgrid[0:32, 0:32].astype(np.float64)
    image = 2.0 * rows + 3.0 * cols
    patch = extract_patches(image, [15.25], [14.5], 8)[0]
    i, j = np.mgrid[0:8, 0:8]
    np.testing.assert_allclose(patch, 2.0 * (14.5 + i - 4) + 3.0 * (15.25 + j - 4), rtol=1e-6)


def test_dtype_promotion_and_input_checks() -> None:
    assert extract_patches(np.ones((8, 8), np.float64), [4], [4], 4).dtype == np.float64
    assert extract_patches(np.ones((8, 8), np.complex64), [4], [4], 4).dtype == np.complex64
    assert extract_patches(np.ones((8, 8), np.uint8), [4], [4], 4).dtype == np.float32
    with pytest.raises(ValueError, match="2-D image"):
        extract_patches(np.ones((2, 8, 8)), [4], [4], 4)
    with pytest.raises(ValueError, match="equal length"):
        extract_patches(np.ones((8, 8)), [4, 5], [4], 4)
    with pytest.raises(ValueError, match="2-D image"):
        translate(np.ones(8), 1, 1)

"""Stitching patches into an object image: ``ptycho_core.stitching``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.geometry import extract_patches, extract_patches_spline
from ptycho_core.stitching import (
    WEIGHT_FLOOR,
    Stitched,
    merge_stitched,
    patches_restoring,
    stitch_patches,
)

NUMERIC = settings(max_examples=25, deadline=None)
SEEDS = st.integers(0, 2**31)


def patch_and_crop(sizes: list[int], smallest: float) -> st.SearchStrategy[tuple[int, int]]:
    """A patch size N from ``sizes`` and a crop size M with round(smallest·N) ≤ M ≤ N."""
    return st.sampled_from(sizes).flatmap(
        lambda N: st.tuples(st.just(N), st.integers(max(1, round(smallest * N)), N))
    )


def _complex_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def _footprint(x: np.ndarray, y: np.ndarray, N: int, M: int, shape: tuple[int, int]):
    """Boolean union of the M×M crops placed at integer positions (test oracle)."""
    c0 = N // 2 - M // 2
    mask = np.zeros(shape, bool)
    for xi, yi in zip(x.astype(int), y.astype(int), strict=True):
        r, c = yi + c0 - N // 2, xi + c0 - N // 2
        mask[max(r, 0) : max(r + M, 0), max(c, 0) : max(c + M, 0)] = True
    return mask


# ----------------------------------------------------------------------------- conventions


@pytest.mark.parametrize(("di", "dj"), [(0, 0), (2, -3), (-4, 3)])
def test_delta_lands_at_the_geometry_pixel(di, dj):
    N, M = 16, 10
    x, y = np.array([20.0]), np.array([13.0])
    patch = np.zeros((1, N, N), np.complex64)
    patch[0, N // 2 + di, N // 2 + dj] = 2.0 - 1.0j
    framed = stitch_patches(patch, x, y, M=M, shape=(40, 40))
    hits = np.argwhere(framed.image != 0)
    np.testing.assert_array_equal(
        hits, [[13 + di, 20 + dj]]
    )  # (row = y + i − N/2, col = x + j − N/2)
    assert framed.image[13 + di, 20 + dj] == 2.0 - 1.0j
    assert framed.origin == (0, 0)
    boxed = stitch_patches(patch, x, y, M=M)
    r0, c0 = boxed.origin
    assert (r0, c0) == (13 - M // 2, 20 - M // 2)
    assert boxed.image.shape == (M, M)
    assert boxed.image[13 + di - r0, 20 + dj - c0] == 2.0 - 1.0j


def test_sub_pixel_delta_splits_bilinearly_in_the_positive_direction():
    N, M = 16, 8
    patch = np.zeros((1, N, N))
    patch[0, N // 2, N // 2] = 1.0
    s = stitch_patches(patch, np.array([10.25]), np.array([7.0]), M=M, shape=(20, 24))
    # Content at column 10.25 → 75 % on column 10, 25 % on column 11 (interior weight is 1).
    assert s.image[7, 10] == pytest.approx(0.75)
    assert s.image[7, 11] == pytest.approx(0.25)
    assert s.weight[7, 10] == pytest.approx(1.0) and s.weight[7, 11] == pytest.approx(1.0)
    assert np.count_nonzero(s.image) == 2
    s = stitch_patches(patch, np.array([10.0]), np.array([7.5]), M=M, shape=(20, 24))
    assert s.image[7, 10] == pytest.approx(0.5) and s.image[8, 10] == pytest.approx(0.5)


def test_only_the_central_crop_is_used():
    N, M = 16, 6
    patch = np.ones((1, N, N), np.complex64)
    s = stitch_patches(patch, np.array([30.0]), np.array([30.0]), M=M, shape=(60, 60))
    assert s.covered.sum() == M * M
    assert np.array_equal(np.argwhere(s.covered)[0], [30 - M // 2, 30 - M // 2])
    # Odd M is centred the same way: crop pixel M//2 is the patch centre N//2.
    s = stitch_patches(patch, np.array([30.0]), np.array([30.0]), M=5, shape=(60, 60))
    rows = np.flatnonzero(s.covered.any(axis=1))
    assert rows.tolist() == [28, 29, 30, 31, 32]


# ----------------------------------------------------------------------------- round trips


@NUMERIC
@given(sizes=patch_and_crop([8, 12, 16], 0.3), n=st.integers(1, 30), seed=SEEDS)
def test_integer_positions_reproduce_the_object_exactly(sizes, n, seed):
    (N, M), rng = sizes, np.random.default_rng(seed)
    H, W = 40, 48
    obj = _complex_noise(rng, (H, W))
    # Patches may reach over the object edge: extraction fills zeros there, stitching clips.
    x = rng.integers(-4, W + 4, n).astype(np.float64)
    y = rng.integers(-4, H + 4, n).astype(np.float64)
    patches = extract_patches(obj, x, y, N)
    s = stitch_patches(patches, x, y, M=M, shape=(H, W))
    expected_cover = _footprint(x, y, N, M, (H, W))
    np.testing.assert_array_equal(s.covered, expected_cover)
    np.testing.assert_allclose(s.image[expected_cover], obj[expected_cover], rtol=0, atol=1e-12)
    assert np.all(s.image[~expected_cover] == 0) and np.all(s.weight[~expected_cover] == 0)
    # Integer placement: the weight counts the crops covering each pixel.
    np.testing.assert_allclose(s.weight, np.round(s.weight), atol=1e-12)


@NUMERIC
@given(
    n=st.integers(1, 25),
    value=st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False),
    seed=SEEDS,
)
def test_sub_pixel_positions_reproduce_a_constant_object_exactly(n, value, seed):
    # Each stitched pixel is a weighted mean of samples; of a constant it is that constant.
    rng = np.random.default_rng(seed)
    N, M = 16, 10
    obj = np.full((60, 60), value, dtype=np.complex128)
    x = rng.uniform(10, 50, n)
    y = rng.uniform(10, 50, n)
    s = stitch_patches(extract_patches(obj, x, y, N), x, y, M=M, shape=obj.shape)
    cov = s.covered
    assert cov.any()
    np.testing.assert_allclose(s.image[cov], value, rtol=1e-9, atol=1e-12)
    assert np.all(s.image[~cov] == 0)


@NUMERIC
@given(
    coef=st.lists(st.floats(-2, 2), min_size=6, max_size=6),
    seed=SEEDS,
)
def test_sub_pixel_positions_reproduce_an_affine_object_inside_all_crops(coef, seed):
    # Bilinear interpolation is exact for an affine object, and inside a crop the splat's
    # weighted mean displacement is zero, so pixels strictly inside every contributing
    # crop are exact. Positions cluster within ±1.5 px so the centre is inside all crops.
    rng = np.random.default_rng(seed)
    N, M = 24, 16
    rr, cc = np.mgrid[0:64, 0:64].astype(np.float64)
    a0, ar, ac, b0, br, bc = coef
    obj = (a0 + ar * rr + ac * cc) + 1j * (b0 + br * rr + bc * cc)
    n = 12
    x = 32 + rng.uniform(-1.5, 1.5, n)
    y = 32 + rng.uniform(-1.5, 1.5, n)
    s = stitch_patches(extract_patches(obj, x, y, N), x, y, M=M, shape=obj.shape)
    inner = (slice(32 - M // 2 + 3, 32 + M // 2 - 3),) * 2
    np.testing.assert_allclose(s.image[inner], obj[inner], rtol=0, atol=1e-9)


@NUMERIC
@given(n=st.integers(2, 40), seed=SEEDS)
def test_sub_pixel_stitch_stays_within_the_local_object_values(n, seed):
    # Every contributing sample is a bilinear mix of object pixels within 1 px of the
    # stitched pixel, so |stitched − object| ≤ max over the 3×3 neighbourhood of
    # |object(p) − object(q)|: a bound from bilinear interpolation, tight for smooth objects.
    rng = np.random.default_rng(seed)
    N, M = 16, 12
    k = 2 * np.pi / 16
    rr, cc = np.mgrid[0:70, 0:70].astype(np.float64)
    obj = (1 + 0.3 * np.cos(k * rr + 0.4)) * np.exp(1j * k * (0.5 * rr + 0.8 * cc))
    x = rng.uniform(12, 58, n)
    y = rng.uniform(12, 58, n)
    s = stitch_patches(extract_patches(obj, x, y, N), x, y, M=M, shape=obj.shape)
    cov = s.covered
    pad = np.pad(obj, 1, mode="edge")
    local = np.zeros(obj.shape)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            shifted = pad[1 + dr : 71 + dr, 1 + dc : 71 + dc]
            local = np.maximum(local, np.abs(shifted - obj))
    err = np.abs(s.image - obj)
    assert np.all(err[cov] <= local[cov] + 1e-12)
    # And the bound is far from vacuous: the mean error is a fraction of it.
    assert err[cov].mean() < 0.5 * local[cov].mean()


@NUMERIC
@given(sizes=patch_and_crop([8, 13, 16], 0.2), n=st.integers(1, 20), seed=SEEDS)
def test_stitching_is_the_adjoint_of_extraction(sizes, n, seed):
    # <E img, P> = <img, E* P> with E = crop ∘ extract_patches and E* P = image · weight.
    (N, M), rng = sizes, np.random.default_rng(seed)
    H, W = 30, 36
    img = _complex_noise(rng, (H, W))
    x = rng.uniform(-8, W + 8, n)
    y = rng.uniform(-8, H + 8, n)
    P = _complex_noise(rng, (n, N, N))
    c0 = N // 2 - M // 2
    crop = (slice(None), slice(c0, c0 + M), slice(c0, c0 + M))
    s = stitch_patches(P, x, y, M=M, shape=(H, W))
    lhs = np.vdot(extract_patches(img, x, y, N)[crop], P[crop])
    rhs = np.vdot(img, s.image * s.weight)
    assert abs(lhs - rhs) <= 1e-9 * (1 + np.abs(P).sum() * np.abs(img).max())


# ----------------------------------------------------------------------------- canvases


@NUMERIC
@given(n=st.integers(1, 20), seed=SEEDS)
def test_bounding_box_canvas_is_a_window_of_the_object_frame(n, seed):
    rng = np.random.default_rng(seed)
    N, M = 16, 9
    x = rng.uniform(15, 60, n)
    y = rng.uniform(15, 50, n)
    P = _complex_noise(rng, (n, N, N))
    framed = stitch_patches(P, x, y, M=M, shape=(70, 80))
    boxed = stitch_patches(P, x, y, M=M)
    r0, c0 = boxed.origin
    h, w = boxed.shape
    window = (slice(r0, r0 + h), slice(c0, c0 + w))
    np.testing.assert_allclose(boxed.image, framed.image[window], atol=1e-12)
    np.testing.assert_allclose(boxed.weight, framed.weight[window], atol=1e-12)
    outside = np.ones(framed.shape, bool)
    outside[window] = False
    assert np.all(framed.weight[outside] == 0) and np.all(framed.image[outside] == 0)
    # The box is tight: every edge row and column holds some weight.
    assert boxed.covered[0].any() and boxed.covered[-1].any()
    assert boxed.covered[:, 0].any() and boxed.covered[:, -1].any()
    assert isinstance(r0, int) and isinstance(c0, int)


def test_uncovered_pixels_are_zero_with_zero_weight():
    N, M = 16, 6
    x = np.array([10.0, 40.0])
    y = np.array([10.0, 10.0])  # two separate crops, a gap between them
    s = stitch_patches(np.full((2, N, N), 3 + 1j), x, y, M=M)
    gap = s.image[:, M:30]
    assert np.all(gap == 0) and np.all(s.weight[:, M:30] == 0)
    assert not s.covered[:, M:30].any()
    np.testing.assert_allclose(s.image[s.covered], 3 + 1j)
    np.testing.assert_allclose(s.amplitude[s.covered], np.hypot(3, 1))
    np.testing.assert_allclose(s.phase[s.covered], np.arctan2(1, 3))
    assert s.covered_above(1.5).sum() == 0  # no pixel is covered twice


def test_accepts_channel_axis_and_real_patches_and_returns_float64_accumulators():
    rng = np.random.default_rng(0)
    P = _complex_noise(rng, (5, 12, 12)).astype(np.complex64)
    x, y = rng.uniform(10, 20, 5), rng.uniform(10, 20, 5)
    a = stitch_patches(P, x, y, M=8)
    b = stitch_patches(P[..., None], x, y, M=8)
    np.testing.assert_array_equal(a.image, b.image)
    assert isinstance(a, Stitched)
    assert a.image.dtype == np.complex128 and a.weight.dtype == np.float64
    r = stitch_patches(P.real, x, y, M=8)
    np.testing.assert_allclose(r.image, a.image.real, atol=1e-6)
    assert np.all(r.image.imag == 0)
    assert WEIGHT_FLOOR < 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patches": np.zeros((3, 8, 8, 4))}, "patches"),
        ({"patches": np.zeros((8, 8))}, "patches"),
        ({"patches": np.zeros((3, 8, 6))}, "patches"),
        ({"patches": np.zeros((3, 8, 8), dtype=bool)}, "patches"),
        ({"M": 9}, "M must"),
        ({"M": 0}, "M must"),
        ({"M": True}, "M must"),
        ({"M": 4.0}, "M must"),
        ({"x": np.zeros(2)}, "x must"),
        ({"y": np.array([0.0, np.inf, 1.0])}, "y must be finite"),
        ({"shape": (10, 0)}, "shape"),
        ({"shape": (10,)}, "shape"),
    ],
)
def test_rejects_bad_input(kwargs, match):
    args = {"patches": np.zeros((3, 8, 8)), "x": np.zeros(3), "y": np.zeros(3), "M": 4}
    args.update(kwargs)
    patches, x, y = args.pop("patches"), args.pop("x"), args.pop("y")
    with pytest.raises(ValueError, match=match):
        stitch_patches(patches, x, y, **args)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 12),
    split=st.floats(0.1, 0.9),
    framed=st.booleans(),
)
def test_stitching_in_two_parts_and_merging_equals_stitching_at_once(
    seed: int, n: int, split: float, framed: bool
) -> None:
    rng = np.random.default_rng(seed)
    N = 8
    patches = rng.standard_normal((n, N, N)) + 1j * rng.standard_normal((n, N, N))
    x, y = rng.uniform(4, 30, n), rng.uniform(4, 30, n)
    shape = (40, 40) if framed else None
    whole = stitch_patches(patches, x, y, M=4, shape=shape)
    k = min(n - 1, max(1, int(split * n)))
    first = stitch_patches(patches[:k], x[:k], y[:k], M=4, shape=shape)
    second = stitch_patches(patches[k:], x[k:], y[k:], M=4, shape=shape)
    merged = merge_stitched(first, second)
    assert merged.origin == whole.origin and merged.shape == whole.shape
    np.testing.assert_allclose(merged.weight, whole.weight, atol=1e-12)
    np.testing.assert_allclose(merged.image, whole.image, atol=1e-9)


def _fine_object(rng: np.random.Generator, size: int) -> np.ndarray:
    """Detail down to about three pixels, amplitude in [0.2, 1], phase in [−1, 1]."""
    from scipy.ndimage import zoom

    def field() -> np.ndarray:
        return zoom(rng.random((size // 3, size // 3)), size / (size // 3), order=1)

    return (0.2 + 0.8 * field()) * np.exp(1j * (2 * field() - 1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), M=st.sampled_from([8, 12, 16]))
def test_patches_restoring_stitch_back_to_the_object(seed: int, M: int) -> None:
    """Sampled patches stitch to a blurred object; the restoring ones to the object itself."""
    rng = np.random.default_rng(seed)
    N, size = 16, 48
    image = _fine_object(rng, size)
    n = 120
    x, y = rng.uniform(N / 2, size - 1 - N / 2, n), rng.uniform(N / 2, size - 1 - N / 2, n)
    sampled = stitch_patches(extract_patches_spline(image, x, y, N), x, y, M=M, shape=image.shape)
    restored = stitch_patches(patches_restoring(image, x, y, N, M=M), x, y, M=M, shape=image.shape)
    inner = restored.covered_above(2.0)  # pixels under several crops, away from the scan's rim
    assert inner.sum() > 100
    before = np.sqrt(np.mean(np.abs(sampled.image - image)[inner] ** 2))
    after = np.sqrt(np.mean(np.abs(restored.image - image)[inner] ** 2))
    assert after < 0.25 * before, (before, after)


def test_patches_restoring_leave_integer_positions_alone() -> None:
    """At whole-pixel positions sampling is exact and stitching returns it: nothing to undo."""
    rng = np.random.default_rng(0)
    image = _fine_object(rng, 40)
    x, y = rng.integers(8, 31, 30).astype(float), rng.integers(8, 31, 30).astype(float)
    np.testing.assert_allclose(
        patches_restoring(image, x, y, 16, M=10), extract_patches_spline(image, x, y, 16), atol=1e-5
    )

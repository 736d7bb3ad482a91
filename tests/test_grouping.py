"""Grouping and normalisation: ``ptycho_core.grouping``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core.data import PtychoData
from ptycho_core.geometry import extract_patches
from ptycho_core.grouping import (
    GroupedData,
    group_positions,
    make_groups,
    normalisation_factor,
)

NUMERIC = settings(max_examples=25, deadline=None)


def _dataset(n_side: int = 6, N: int = 16, step: float = 3.0, seed: int = 0, obj: bool = True):
    rng = np.random.default_rng(seed)
    g = 12.0 + step * np.arange(n_side)
    X, Y = np.meshgrid(g, g)
    x = (X.ravel() + rng.uniform(-0.4, 0.4, X.size)).astype(np.float64)
    y = (Y.ravel() + rng.uniform(-0.4, 0.4, Y.size)).astype(np.float64)
    n = x.size
    size = int(g[-1] + N)
    return PtychoData(
        diffraction=rng.uniform(0.0, 50.0, (n, N, N)).astype(np.float32),
        xcoords=x,
        ycoords=y,
        probe=np.ones((N, N), dtype=np.complex64),
        object=(
            (
                rng.uniform(0.5, 1.0, (size, size)) * np.exp(1j * rng.uniform(-1, 1, (size, size)))
            ).astype(np.complex64)
            if obj
            else None
        ),
    )


# ----------------------------------------------------------------------------- normalisation


@NUMERIC
@given(
    n=st.integers(1, 5),
    N=st.sampled_from([4, 8, 10]),
    scale=st.floats(1e-3, 1e4),
    seed=st.integers(0, 2**32 - 1),
)
def test_normalisation_gives_mean_intensity_quarter_n_squared(n, N, scale, seed):
    X = (np.random.default_rng(seed).uniform(0.0, 1.0, (n, N, N)) * scale).astype(np.float32)
    X[0, 0, 0] += scale  # never all zero
    a = normalisation_factor(X)
    Xn = a * X.astype(np.float64)
    assert np.mean(np.sum(Xn**2, axis=(1, 2))) == pytest.approx((N / 2) ** 2, rel=1e-9)
    # Scale invariance: a(cX) = a(X)/c.
    assert normalisation_factor(X * np.float32(3.0)) == pytest.approx(a / 3.0, rel=1e-6)


def test_normalisation_is_uint16_safe():
    X = np.full((3, 8, 8), 60000, dtype=np.uint16)  # 60000² overflows uint16/int32 sums
    expected = np.sqrt(16.0 / (64 * 60000.0**2))
    assert normalisation_factor(X) == pytest.approx(expected, rel=1e-12)


def test_normalisation_with_channels_averages_patterns_and_channels():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, (5, 8, 8, 4))
    flat = np.moveaxis(X, -1, 1).reshape(20, 8, 8)
    assert normalisation_factor(X) == pytest.approx(normalisation_factor(flat), rel=1e-12)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((3, 8, 8), np.float32), "all zero"),
        (np.ones((8, 8)), "shape"),
        (np.ones((2, 8, 6)), "shape"),
        (np.ones((0, 8, 8)), "shape"),
        (np.ones((2, 4, 4), np.complex64), "real"),
        (np.full((2, 4, 4), np.nan), "non-finite"),
    ],
)
def test_normalisation_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        normalisation_factor(bad)


# ----------------------------------------------------------------------------- group_positions


def test_gridsize_one_groups_are_the_seeds():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 50, 40), rng.uniform(0, 50, 40)
    g = group_positions(x, y, 1, n_groups=10, seed=3)
    assert g.shape == (10, 1) and g.dtype == np.int64
    assert len(np.unique(g)) == 10 and g.min() >= 0 and g.max() < 40
    every = group_positions(x, y, 1)
    assert sorted(every[:, 0]) == list(range(40))  # all positions, shuffled
    assert not np.array_equal(every[:, 0], np.arange(40))
    seq = group_positions(x, y, 1, n_groups=7, sequential=True)
    np.testing.assert_array_equal(seq[:, 0], np.arange(7))


def test_more_groups_than_positions_warns_and_uses_all():
    x, y = np.arange(5.0), np.zeros(5)
    with pytest.warns(UserWarning, match="n_groups=9 exceeds the 5 positions"):
        g = group_positions(x, y, 1, n_groups=9)
    assert sorted(g[:, 0]) == [0, 1, 2, 3, 4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        group_positions(x, y, 1, n_groups=5)  # exactly n: no warning


@NUMERIC
@given(
    n=st.integers(10, 60),
    gridsize=st.sampled_from([2, 3]),
    extra_k=st.integers(0, 4),
    seed=st.integers(0, 2**31),
)
def test_groups_are_drawn_from_the_k_nearest_neighbours(n, gridsize, extra_k, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(0, 100, n), rng.uniform(0, 100, n)
    C = gridsize**2
    K = C + extra_k
    g = group_positions(x, y, gridsize, neighbor_count=K, seed=seed, sequential=True)
    assert g.shape == (n, C) and g.dtype == np.int64
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, min(K, n - 1) - 1]
    for b in range(n):
        members = g[b]
        assert len(set(members.tolist())) == C
        assert b not in members  # the seed is not its own neighbour
        assert np.all(d[b, members] <= kth[b] + 1e-12)
    # Deterministic per seed.
    again = group_positions(x, y, gridsize, neighbor_count=K, seed=seed, sequential=True)
    np.testing.assert_array_equal(g, again)


def test_neighbour_choice_is_random_among_k():
    # Regular grid, K = 8 > C = 4: every one of the 8 nearest must be drawn about C/K of the time.
    g1 = np.arange(30.0)
    X, Y = np.meshgrid(g1, g1)
    x, y = X.ravel(), Y.ravel()
    groups = group_positions(x, y, 2, neighbor_count=8, seed=11, sequential=True)
    interior = [(r, c) for r in range(3, 27) for c in range(3, 27)]
    ring = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)]
    counts = np.zeros(8)
    for r, c in interior:
        members = set(groups[r * 30 + c].tolist())
        for k, (dr, dc) in enumerate(ring):
            counts[k] += (r + dr) * 30 + (c + dc) in members
    freq = counts / len(interior)
    np.testing.assert_allclose(freq, 0.5, atol=0.08)  # C/K = 4/8
    other = group_positions(x, y, 2, neighbor_count=8, seed=12, sequential=True)
    assert not np.array_equal(groups, other)


def test_seed_is_prepended_only_when_too_few_neighbours():
    x = np.array([0.0, 1.0, 0.0, 1.0])
    y = np.array([0.0, 0.0, 1.0, 1.0])
    g = group_positions(x, y, 2, neighbor_count=4, sequential=True)
    np.testing.assert_array_equal(g[:, 0], np.arange(4))
    assert all(sorted(row) == [0, 1, 2, 3] for row in g.tolist())
    more = np.append(x, 5.0), np.append(y, 5.0)
    g5 = group_positions(*more, 2, neighbor_count=4, sequential=True)
    assert all(b not in g5[b] for b in range(5))


def test_duplicate_positions_still_give_distinct_members():
    x = np.zeros(12)
    y = np.zeros(12)
    g = group_positions(x, y, 2, neighbor_count=4, sequential=True)
    for b, row in enumerate(g.tolist()):
        assert len(set(row)) == 4 and b not in row


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gridsize": 2, "neighbor_count": 3}, "neighbor_count"),
        ({"gridsize": 0}, "gridsize"),
        ({"gridsize": True}, "gridsize"),
        ({"gridsize": 2.0}, "gridsize"),
        ({"gridsize": 1, "n_groups": 0}, "n_groups"),
        ({"gridsize": 1, "neighbor_count": 0}, "neighbor_count"),
        ({"gridsize": 4, "neighbor_count": 16}, "need at least 16"),
    ],
)
def test_group_positions_rejects_bad_arguments(kwargs, match):
    x, y = np.arange(10.0), np.arange(10.0)
    with pytest.raises(ValueError, match=match):
        group_positions(x, y, **kwargs)


def test_group_positions_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="equal length"):
        group_positions(np.arange(4.0), np.arange(5.0), 1)
    with pytest.raises(ValueError, match="finite"):
        group_positions(np.array([0.0, np.nan]), np.zeros(2), 1)
    with pytest.raises(ValueError, match="no positions"):
        group_positions(np.zeros(0), np.zeros(0), 1)


# ----------------------------------------------------------------------------- make_groups


@pytest.mark.parametrize("gridsize", [1, 2])
def test_make_groups_builds_the_model_inputs(gridsize):
    data = _dataset()
    C = gridsize**2
    gd = make_groups(data, gridsize, n_groups=12, neighbor_count=6, seed=5)
    assert isinstance(gd, GroupedData)
    B, N = 12, data.N
    assert gd.diffraction.shape == (B, N, N, C) and gd.diffraction.dtype == np.float32
    assert gd.coords_relative.shape == (B, 1, 2, C) and gd.coords_relative.dtype == np.float32
    assert gd.coords_offsets.shape == (B, 1, 2, 1) and gd.coords_offsets.dtype == np.float64
    assert gd.nn_indices.shape == (B, C) and gd.nn_indices.dtype == np.int64
    assert gd.object_patches is not None
    assert gd.object_patches.shape == (B, N, N, C) and gd.object_patches.dtype == np.complex64
    assert (gd.N, gd.n_groups, gd.channels, gd.gridsize) == (N, B, C, gridsize)

    nn = gd.nn_indices
    np.testing.assert_array_equal(
        nn,
        group_positions(
            data.xcoords, data.ycoords, gridsize, n_groups=12, neighbor_count=6, seed=5
        ),
    )
    a = normalisation_factor(data.diffraction)
    assert gd.normalisation == a
    expected = np.moveaxis(data.diffraction[nn], 1, -1) * np.float32(a)
    np.testing.assert_array_equal(gd.diffraction, expected)

    xs, ys = data.xcoords[nn], data.ycoords[nn]
    np.testing.assert_allclose(gd.coords_offsets[:, 0, 0, 0], xs.mean(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gd.coords_offsets[:, 0, 1, 0], ys.mean(axis=1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        gd.coords_relative[:, 0, 0, :], -(xs - xs.mean(axis=1, keepdims=True)), atol=1e-5
    )
    np.testing.assert_allclose(
        gd.coords_relative[:, 0, 1, :], -(ys - ys.mean(axis=1, keepdims=True)), atol=1e-5
    )
    np.testing.assert_allclose(gd.coords_relative.sum(axis=3), 0.0, atol=1e-5)

    for c in range(C):
        want = extract_patches(data.object, xs[:, c], ys[:, c], N)
        np.testing.assert_allclose(gd.object_patches[..., c], want, atol=1e-6)


def test_make_groups_normalises_the_whole_dataset_to_quarter_n_squared():
    data = _dataset()
    gd = make_groups(data, 1, sequential=True)
    np.testing.assert_array_equal(gd.nn_indices[:, 0], np.arange(data.n_positions))
    mean_intensity = np.mean(np.sum(gd.diffraction.astype(np.float64) ** 2, axis=(1, 2)))
    assert mean_intensity == pytest.approx((data.N / 2) ** 2, rel=1e-5)
    # A subset keeps the dataset's factor, not its own.
    sub = make_groups(data, 1, n_groups=3)
    assert sub.normalisation == gd.normalisation


def test_make_groups_without_object_has_no_object_patches():
    gd = make_groups(_dataset(obj=False), 2, n_groups=4)
    assert gd.object_patches is None and gd.diffraction.shape[-1] == 4


def test_make_groups_is_deterministic_per_seed():
    data = _dataset()
    a = make_groups(data, 2, n_groups=10, seed=1)
    b = make_groups(data, 2, n_groups=10, seed=1)
    c = make_groups(data, 2, n_groups=10, seed=2)
    np.testing.assert_array_equal(a.nn_indices, b.nn_indices)
    np.testing.assert_array_equal(a.diffraction, b.diffraction)
    assert not np.array_equal(a.nn_indices, c.nn_indices)


@NUMERIC
@given(
    sizes=st.lists(st.integers(4, 25), min_size=2, max_size=4),
    seed=st.integers(0, 2**31),
)
def test_groups_never_mix_scans(sizes, seed):
    # Interleaved scans on the same coordinates: only scan_index keeps them apart.
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    x, y = rng.uniform(0, 50, n), rng.uniform(0, 50, n)
    scan = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    g = group_positions(x, y, 2, neighbor_count=4, seed=seed, sequential=True, scan_index=scan)
    assert g.shape == (n, 4)
    assert np.all(scan[g] == scan[:, None])  # row b is seeded at position b
    # ... and drawn from the seed's nearest neighbours within its own scan.
    d = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    d[scan[:, None] != scan[None, :]] = np.inf
    np.fill_diagonal(d, np.inf)
    kth = np.sort(d, axis=1)[:, 3]
    for b in range(n):
        assert b not in g[b] or sizes[scan[b]] == 4
        others = [m for m in g[b] if m != b]
        assert np.all(d[b, others] <= kth[b] + 1e-12)


def test_a_scan_too_small_for_a_group_is_refused():
    x = np.arange(10.0)
    scan = np.array([0] * 7 + [1] * 3)
    with pytest.raises(ValueError, match="at least 4 in every scan, found 3 in scan 1"):
        group_positions(x, x, 2, neighbor_count=4, scan_index=scan)


def test_one_scan_index_gives_the_groups_of_no_scan_index():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 80, 60), rng.uniform(0, 80, 60)
    plain = group_positions(x, y, 2, neighbor_count=6, seed=9)
    tagged = group_positions(x, y, 2, neighbor_count=6, seed=9, scan_index=np.zeros(60, int))
    np.testing.assert_array_equal(plain, tagged)

"""``load_npz(layout='upstream')``: upstream PtychoPINN's datasets read as upstream reads them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptycho_core.data import load_npz
from ptycho_core.errors import DataContractError

N = 8


def _write(path, **arrays) -> None:
    n = len(arrays.get("xcoords", np.zeros(3)))
    base = {
        "xcoords": np.linspace(4, 6, n),
        "ycoords": np.linspace(4, 5, n),
        "probeGuess": np.ones((N, N), np.complex128),
    }
    np.savez(path, **{**base, **arrays})


amplitudes = hnp.arrays(
    np.float32,
    st.tuples(st.integers(1, 5), st.just(N), st.just(N)),
    elements=st.floats(0, 1e4, width=32),
)


@settings(max_examples=40, deadline=None)
@given(patterns=amplitudes, channels_last=st.booleans())
def test_diff3d_holds_amplitudes_in_upstreams_layout(tmp_path_factory, patterns, channels_last):
    path = tmp_path_factory.mktemp("upstream") / "data.npz"
    n = patterns.shape[0]
    stored = np.transpose(patterns, (1, 2, 0)) if channels_last else patterns
    _write(path, diff3d=stored, xcoords=np.full(n, 4.0), ycoords=np.full(n, 4.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        upstream = load_npz(path, layout="upstream").diffraction
        ours = load_npz(path).diffraction
        as_counts = load_npz(path, layout="upstream", diffraction_is_intensity=True).diffraction
    # n (at most 5) < N: never ambiguous; the (N, N, n) layout is transposed with a warning
    assert len(caught) == (3 if channels_last else 0)
    np.testing.assert_array_equal(upstream, patterns)
    np.testing.assert_allclose(ours, np.sqrt(patterns), rtol=1e-6)
    np.testing.assert_allclose(as_counts, np.sqrt(patterns), rtol=1e-6)


def test_positions_are_the_start_coordinates_when_the_file_has_both(tmp_path) -> None:
    path = tmp_path / "data.npz"
    start = np.array([4.0, 5.0, 6.0])
    _write(
        path,
        diffraction=np.ones((3, N, N), np.float32),
        xcoords_start=start,
        ycoords_start=start + 0.5,
    )
    upstream = load_npz(path, layout="upstream")
    np.testing.assert_array_equal(upstream.xcoords, start)
    np.testing.assert_array_equal(upstream.ycoords, start + 0.5)
    np.testing.assert_array_equal(load_npz(path).xcoords, np.linspace(4, 6, 3))


def test_only_one_start_coordinate_leaves_the_positions_alone(tmp_path) -> None:
    path = tmp_path / "data.npz"
    _write(path, diffraction=np.ones((3, N, N), np.float32), xcoords_start=np.zeros(3))
    np.testing.assert_array_equal(load_npz(path, layout="upstream").xcoords, np.linspace(4, 6, 3))


def test_bad_start_coordinates_are_named(tmp_path) -> None:
    path = tmp_path / "data.npz"
    _write(
        path,
        diffraction=np.ones((3, N, N), np.float32),
        xcoords_start=np.zeros((3, 2)),
        ycoords_start=np.zeros(3),
    )
    with pytest.raises(DataContractError, match="key 'xcoords_start': expected a 1-D"):
        load_npz(path, layout="upstream")
    load_npz(path)  # our own layout never reads them


def test_an_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout must be one of ptycho, upstream, found 'tf'"):
        load_npz("any.npz", layout="tf")

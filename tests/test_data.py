"""The NPZ data contract (specs/data-contract.md): every rule, the round trip, atomic writes."""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho_core.data import FORMAT_KEY, FORMAT_VALUE, PtychoData, load_npz, save_npz, validate
from ptycho_core.errors import DataContractError

N0, n0, H0, W0 = 8, 5, 20, 24


def valid_arrays(n: int = n0, N: int = N0, *, seed: int = 0, H: int = H0, W: int = W0) -> dict:
    """A small dataset that satisfies the contract, as NPZ keys."""
    rng = np.random.default_rng(seed)
    return {
        "diffraction": rng.uniform(0.0, 3.0, (n, N, N)).astype(np.float32),
        "xcoords": rng.uniform(0, W - 1, n),
        "ycoords": rng.uniform(0, H - 1, n),
        "probeGuess": (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(
            np.complex64
        ),
        "objectGuess": (
            rng.uniform(0.1, 1, (H, W)) * np.exp(1j * rng.uniform(-1, 1, (H, W)))
        ).astype(np.complex64),
        "scan_index": np.zeros(n, dtype=np.int64),
    }


def write(path: Path, arrays: dict) -> Path:
    """Write raw arrays with plain numpy (pickle allowed), as a foreign tool might."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def as_data(arrays: dict, source: str = "<memory>") -> PtychoData:
    return PtychoData(
        diffraction=arrays["diffraction"],
        xcoords=arrays["xcoords"],
        ycoords=arrays["ycoords"],
        probe=arrays["probeGuess"],
        object=arrays.get("objectGuess"),
        scan_index=arrays.get("scan_index"),
        source=source,
    )


def assert_contract_error(error: pytest.ExceptionInfo, source: str | Path, key: str | None) -> str:
    message = str(error.value)
    assert isinstance(error.value, DataContractError) and isinstance(error.value, ValueError)
    assert str(source) in message, message
    if key is not None:
        assert f"'{key}'" in message, message
    return message


def load_error(path: Path, key: str | None, **kwargs) -> str:
    with pytest.raises(DataContractError) as error:
        load_npz(path, **kwargs)
    return assert_contract_error(error, path, key)


# --------------------------------------------------------------------------- happy paths


def test_load_returns_canonical_arrays_and_names_the_source(tmp_path):
    arrays = valid_arrays()
    path = write(tmp_path / "ok.npz", arrays)
    data = load_npz(path)
    assert data.source == str(path)
    assert (data.n_positions, data.N) == (n0, N0)
    assert data.diffraction.dtype == np.float32 and data.diffraction.shape == (n0, N0, N0)
    assert data.xcoords.dtype == data.ycoords.dtype == np.float64
    assert data.probe.dtype == data.object.dtype == np.complex64
    assert data.scan_index.dtype == np.int64
    np.testing.assert_array_equal(data.diffraction, arrays["diffraction"])
    np.testing.assert_array_equal(data.probe, arrays["probeGuess"])
    np.testing.assert_array_equal(data.object, arrays["objectGuess"])


def test_optional_keys_may_be_absent_and_extra_keys_are_ignored_unread(tmp_path):
    arrays = valid_arrays()
    del arrays["objectGuess"], arrays["scan_index"]
    arrays["xcoords_start"] = arrays["xcoords"]
    arrays["bad_pixels"] = np.zeros((N0, N0), bool)
    arrays["notes"] = np.array([{"anything": 1}], dtype=object)  # would need pickle if read
    data = load_npz(write(tmp_path / "extra.npz", arrays))
    assert data.object is None and data.scan_index is None


def test_wider_dtypes_are_cast_silently(tmp_path):
    # pytest turns warnings into errors, so "silently" is checked too.
    arrays = valid_arrays()
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    arrays["probeGuess"] = arrays["probeGuess"].astype(np.complex128)
    arrays["objectGuess"] = arrays["objectGuess"].astype(np.complex128)
    arrays["xcoords"] = np.round(arrays["xcoords"]).astype(np.int32)
    arrays["scan_index"] = arrays["scan_index"].astype(np.uint8)
    data = load_npz(write(tmp_path / "wide.npz", arrays))
    assert data.diffraction.dtype == np.float32
    assert data.probe.dtype == data.object.dtype == np.complex64
    assert data.xcoords.dtype == np.float64 and data.scan_index.dtype == np.int64
    np.testing.assert_allclose(data.probe, arrays["probeGuess"], rtol=1e-6)


def test_real_float_probe_and_object_become_complex64_with_zero_phase(tmp_path):
    arrays = valid_arrays()
    arrays["probeGuess"] = np.abs(arrays["probeGuess"]).astype(np.float64)
    arrays["objectGuess"] = np.abs(arrays["objectGuess"]).astype(np.float32)
    data = load_npz(write(tmp_path / "real.npz", arrays))
    assert data.probe.dtype == np.complex64 and np.all(data.probe.imag == 0)
    np.testing.assert_allclose(data.probe.real, arrays["probeGuess"], rtol=1e-6)
    assert data.object.dtype == np.complex64 and np.all(data.object.imag == 0)


def test_legacy_diff3d_holds_intensities_and_is_square_rooted(tmp_path):
    arrays = valid_arrays()
    counts = np.random.default_rng(1).poisson(40.0, (n0, N0, N0)).astype(np.uint16)
    del arrays["diffraction"]
    arrays["diff3d"] = counts
    data = load_npz(write(tmp_path / "raw.npz", arrays))
    assert data.diffraction.dtype == np.float32
    np.testing.assert_allclose(data.diffraction, np.sqrt(counts.astype(np.float64)), rtol=1e-6)


def test_diffraction_wins_over_diff3d_and_the_flag_overrides_either_default(tmp_path):
    arrays = valid_arrays()
    amplitudes = arrays["diffraction"]
    arrays["diff3d"] = np.full((n0, N0, N0), 9.0, np.float32)
    path = write(tmp_path / "both.npz", arrays)
    np.testing.assert_array_equal(load_npz(path).diffraction, amplitudes)
    np.testing.assert_allclose(
        load_npz(path, diffraction_is_intensity=True).diffraction, np.sqrt(amplitudes), rtol=1e-6
    )
    del arrays["diffraction"]
    legacy = write(tmp_path / "legacy.npz", arrays)
    np.testing.assert_array_equal(load_npz(legacy).diffraction, 3.0)
    np.testing.assert_array_equal(load_npz(legacy, diffraction_is_intensity=False).diffraction, 9.0)


def test_integer_counts_under_diffraction_load_when_flagged_as_intensity(tmp_path):
    arrays = valid_arrays()
    arrays["diffraction"] = np.full((n0, N0, N0), 16, np.int32)
    data = load_npz(write(tmp_path / "counts.npz", arrays), diffraction_is_intensity=True)
    np.testing.assert_array_equal(data.diffraction, 4.0)


def test_legacy_patterns_last_layout_is_transposed_with_a_warning(tmp_path):
    arrays = valid_arrays()
    stack = arrays["diffraction"]
    arrays["diffraction"] = np.ascontiguousarray(stack.transpose(1, 2, 0))  # (N, N, n)
    path = write(tmp_path / "hwn.npz", arrays)
    with pytest.warns(UserWarning, match=re.escape(str(path))) as record:
        data = load_npz(path)
    assert "transposed" in str(record[0].message)
    np.testing.assert_array_equal(data.diffraction, stack)


def test_legacy_layout_with_n_equal_to_n_is_kept_with_a_warning(tmp_path):
    arrays = valid_arrays(n=N0)
    path = write(tmp_path / "square.npz", arrays)
    with pytest.warns(UserWarning, match="ambiguous") as record:
        data = load_npz(path)
    assert str(path) in str(record[0].message)
    np.testing.assert_array_equal(data.diffraction, arrays["diffraction"])
    # A marker other than ptycho's own does not silence the warning.
    path = write(tmp_path / "other.npz", {**arrays, FORMAT_KEY: np.array("someone-else/3")})
    with pytest.warns(UserWarning, match="ambiguous"):
        load_npz(path)


def test_n_equal_to_n_is_not_ambiguous_in_memory_or_in_files_ptycho_wrote(tmp_path):
    # pytest turns warnings into errors: these calls must stay silent.
    arrays = valid_arrays(n=N0)
    data = validate(as_data(arrays))
    path = tmp_path / "square.npz"
    save_npz(data, path)
    np.testing.assert_array_equal(load_npz(path).diffraction, arrays["diffraction"])


def test_three_d_probe_takes_mode_0_and_warns_only_if_other_modes_carry_power(tmp_path):
    arrays = valid_arrays()
    mode0 = arrays["probeGuess"]
    arrays["probeGuess"] = np.stack([mode0, 0.05 * mode0])  # 0.25 % of the power: silent
    np.testing.assert_array_equal(load_npz(write(tmp_path / "m1.npz", arrays)).probe, mode0)
    arrays["probeGuess"] = np.stack([mode0, 0.5 * mode0, 0.5 * mode0])  # 33 %: warns
    path = write(tmp_path / "m3.npz", arrays)
    with pytest.warns(UserWarning, match="mode 0") as record:
        data = load_npz(path)
    assert str(path) in str(record[0].message) and "33.3%" in str(record[0].message)
    np.testing.assert_array_equal(data.probe, mode0)
    arrays["probeGuess"] = mode0[None]
    np.testing.assert_array_equal(load_npz(write(tmp_path / "m0.npz", arrays)).probe, mode0)


def test_positions_on_the_object_border_are_inside(tmp_path):
    arrays = valid_arrays()
    arrays["xcoords"][:2] = [0.0, W0 - 1]
    arrays["ycoords"][:2] = [H0 - 1, 0.0]
    load_npz(write(tmp_path / "border.npz", arrays))


# --------------------------------------------------------------------------- file-level errors


def test_missing_file_and_directory(tmp_path):
    load_error(tmp_path / "absent.npz", None)
    assert "no such file" in load_error(tmp_path / "absent.npz", None)
    assert "directory" in load_error(tmp_path, None)


@pytest.mark.parametrize(
    "content",
    [b"", b"not an npz at all, just text\n", b"PK\x03\x04truncated zip"],
    ids=["empty", "text", "truncated-zip"],
)
def test_files_that_are_not_npz_archives(tmp_path, content):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    assert "expected an .npz" in load_error(path, None)


def test_a_single_npy_array_is_not_an_npz(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.zeros((2, 4, 4), np.float32))
    assert ".npy" in load_error(path, None)


def test_a_truncated_archive_is_reported(tmp_path):
    path = write(tmp_path / "cut.npz", valid_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    load_error(path, None)


@pytest.mark.parametrize("key", ["diffraction", "xcoords", "ycoords", "probeGuess"])
def test_missing_required_keys(tmp_path, key):
    arrays = valid_arrays()
    del arrays[key]
    message = load_error(write(tmp_path / "missing.npz", arrays), key)
    assert "missing" in message
    if key == "diffraction":
        assert "diff3d" in message


_CALLS: list[str] = []


def _record_call(tag: str) -> str:
    _CALLS.append(tag)
    return tag


class _Payload:
    """Unpickling this object would call ``_record_call``: loading must never do that."""

    def __reduce__(self):
        return (_record_call, ("unpickled!",))


@pytest.mark.parametrize(
    "key", ["diffraction", "xcoords", "probeGuess", "objectGuess", "scan_index"]
)
def test_object_arrays_are_refused_without_unpickling(tmp_path, key):
    arrays = valid_arrays()
    arrays[key] = np.array([_Payload(), 1], dtype=object)
    _CALLS.clear()
    message = load_error(write(tmp_path / "pickle.npz", arrays), key)
    assert "pickle" in message
    assert _CALLS == []


# --------------------------------------------------------------------------- per-key errors


class At(NamedTuple):
    """Set one element of the named array."""

    index: Any
    value: Any


class Whole(NamedTuple):
    """Change the arrays as a whole (where more than the named array changes)."""

    mutate: Callable[[dict[str, np.ndarray]], None]


def mutation(key: str, change: Callable[[np.ndarray], Any] | At | Whole):
    """``change`` of ``valid_arrays()`` as a function of the dict: the named array replaced
    by ``change(array)``, one element of it set, or the ``Whole`` dict changed."""
    if isinstance(change, Whole):
        return change.mutate
    if isinstance(change, At):
        return lambda a: a[key].__setitem__(change.index, change.value)
    return lambda a: a.update({key: change(a[key])})


# (description, key the error must name, change of that array in valid_arrays(), text the
# message must have)
BAD_CASES = [
    ("diffraction 2-D", "diffraction", lambda v: v[0], "3-D"),
    ("diffraction 4-D", "diffraction", lambda v: v[None], "3-D"),
    ("diffraction complex", "diffraction", lambda v: v.astype(np.complex64), "complex64"),
    ("diffraction bool", "diffraction", lambda v: v > 1, "bool"),
    ("diffraction string", "diffraction", lambda _: np.full((n0, N0, N0), "x"), "<U1"),
    ("diffraction integer", "diffraction", lambda _: np.ones((n0, N0, N0), np.uint16), "diff3d"),
    ("diffraction non-square", "diffraction", lambda v: v[:, :, :-2], "square"),
    ("diffraction odd N", "diffraction", lambda v: v[:, :-1, :-1], "even"),
    ("diffraction count != len(xcoords)", "diffraction", lambda v: v[:-1], "len(xcoords)"),
    (
        "diffraction empty",
        "diffraction",
        Whole(
            lambda a: a.update(
                diffraction=a["diffraction"][:0],
                xcoords=a["xcoords"][:0],
                ycoords=a["ycoords"][:0],
                scan_index=a["scan_index"][:0],
            )
        ),
        "at least one",
    ),
    ("diffraction NaN", "diffraction", At((1, 2, 3), np.nan), "NaN"),
    ("diffraction inf", "diffraction", At((0, 0, 0), np.inf), "inf"),
    ("diffraction negative", "diffraction", At((2, 1, 1), -0.5), "non-negative amplitudes"),
    ("xcoords 2-D", "xcoords", lambda v: v[:, None], "1-D"),
    ("xcoords complex", "xcoords", lambda v: v + 0j, "complex"),
    ("xcoords bool", "xcoords", lambda v: v > 3, "bool"),
    ("xcoords string", "xcoords", lambda v: v.astype(str), "<U"),
    ("xcoords NaN", "xcoords", At(0, np.nan), "NaN"),
    ("ycoords inf", "ycoords", At(1, -np.inf), "inf"),
    ("ycoords length", "ycoords", lambda v: v[:-1], "entries"),
    (
        "probe wrong size",
        "probeGuess",
        lambda _: np.ones((N0 + 2, N0 + 2), np.complex64),
        f"({N0}, {N0})",
    ),
    (
        "probe not square",
        "probeGuess",
        lambda _: np.ones((N0, N0 - 2), np.complex64),
        f"({N0}, {N0})",
    ),
    ("probe 1-D", "probeGuess", lambda v: v[0], "2-D"),
    ("probe 4-D", "probeGuess", lambda v: v[None, None], "2-D"),
    ("probe integer", "probeGuess", lambda _: np.ones((N0, N0), np.int64), "int64"),
    ("probe bool", "probeGuess", lambda _: np.ones((N0, N0), bool), "bool"),
    ("probe NaN", "probeGuess", At((0, 1), np.nan), "NaN"),
    ("probe zero", "probeGuess", lambda _: np.zeros((N0, N0), np.complex64), "zeros"),
    ("probe zero modes", "probeGuess", lambda _: np.zeros((0, N0, N0), np.complex64), "mode"),
    (
        "probe modes of wrong size",
        "probeGuess",
        lambda _: np.ones((2, N0 + 2, N0 + 2), np.complex64),
        f"({N0}, {N0})",
    ),
    ("object 1-D", "objectGuess", lambda v: v[0], "2-D"),
    ("object 3-D", "objectGuess", lambda v: v[None], "2-D"),
    ("object integer", "objectGuess", lambda _: np.ones((H0, W0), np.int16), "int16"),
    ("object NaN", "objectGuess", At((3, 3), np.nan), "NaN"),
    ("object smaller than the scan", "objectGuess", lambda v: v[:4, :4], "every scan position"),
    (
        "position right of the object",
        "objectGuess",
        Whole(lambda a: a["xcoords"].__setitem__(0, W0 - 0.99)),
        "every scan position",
    ),
    (
        "position above the object",
        "objectGuess",
        Whole(lambda a: a["ycoords"].__setitem__(2, -0.01)),
        "every scan position",
    ),
    ("scan_index float", "scan_index", lambda v: v.astype(np.float64), "integers"),
    ("scan_index bool", "scan_index", lambda v: v > 0, "integers"),
    ("scan_index length", "scan_index", lambda v: v[1:], "entries"),
    ("scan_index 2-D", "scan_index", lambda v: v[None], "1-D"),
]


@pytest.mark.parametrize(
    ("what", "key", "change", "text"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_each_contract_violation_in_a_file_names_file_and_key(tmp_path, what, key, change, text):
    arrays = valid_arrays()
    mutation(key, change)(arrays)
    message = load_error(write(tmp_path / "bad.npz", arrays), key)
    assert text in message, message
    assert "expected" in message and "found" in message


@pytest.mark.parametrize(
    ("what", "key", "change", "text"), BAD_CASES, ids=[c[0] for c in BAD_CASES]
)
def test_each_contract_violation_in_memory_names_source_and_key(what, key, change, text):
    arrays = valid_arrays()
    mutation(key, change)(arrays)
    with pytest.raises(DataContractError) as error:
        validate(as_data(arrays, source="my-run"))
    assert text in assert_contract_error(error, "my-run", key)


@pytest.mark.parametrize(
    ("mutate", "text"),
    [
        (lambda a: a["diff3d"].__setitem__((0, 1, 2), -1.0), "non-negative intensities"),
        (lambda a: a["diff3d"].__setitem__((0, 1, 2), np.nan), "NaN"),
        (lambda a: a.update(diff3d=a["diff3d"].astype(np.complex64)), "complex64"),
        (lambda a: a.update(diff3d=a["diff3d"] > 0), "bool"),
        (lambda a: a.update(diff3d=a["diff3d"][:, :, :-2]), "square"),
    ],
    ids=["negative", "nan", "complex", "bool", "non-square"],
)
def test_diff3d_violations_name_diff3d(tmp_path, mutate, text):
    arrays = valid_arrays()
    arrays["diff3d"] = arrays.pop("diffraction") ** 2
    mutate(arrays)
    assert text in load_error(write(tmp_path / "raw.npz", arrays), "diff3d")


def test_integer_diff3d_read_as_amplitudes_is_refused(tmp_path):
    arrays = valid_arrays()
    arrays["diff3d"] = np.ones((n0, N0, N0), np.uint16)
    del arrays["diffraction"]
    path = write(tmp_path / "raw.npz", arrays)
    assert "counts" in load_error(path, "diff3d", diffraction_is_intensity=False)


def test_flag_must_be_a_bool(tmp_path):
    path = write(tmp_path / "ok.npz", valid_arrays())
    with pytest.raises(TypeError, match="diffraction_is_intensity"):
        load_npz(path, diffraction_is_intensity="yes")


def test_validate_needs_ptychodata():
    with pytest.raises(TypeError, match="PtychoData"):
        validate(valid_arrays())


def test_validate_returns_canonical_dtypes_without_copying_canonical_arrays():
    arrays = valid_arrays()
    data = validate(as_data(arrays))
    assert data.diffraction is arrays["diffraction"] and data.probe is arrays["probeGuess"]
    wide = validate(as_data({**arrays, "diffraction": arrays["diffraction"].astype(np.float64)}))
    assert wide.diffraction.dtype == np.float32


def test_validate_accepts_lists_and_reports_ragged_ones():
    arrays = valid_arrays()
    data = validate(as_data({**arrays, "xcoords": arrays["xcoords"].tolist()}))
    assert data.xcoords.dtype == np.float64
    with pytest.raises(DataContractError) as error:
        validate(as_data({**arrays, "xcoords": [[1.0], [2.0, 3.0]]}, source="ragged"))
    assert_contract_error(error, "ragged", "xcoords")


# --------------------------------------------------------------------------- writing


def test_save_writes_exactly_the_contract_keys_and_dtypes(tmp_path):
    arrays = valid_arrays()
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    path = tmp_path / "sub" / "out.npz"
    save_npz(as_data(arrays), path)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            [
                "diffraction",
                "xcoords",
                "ycoords",
                "probeGuess",
                "objectGuess",
                "scan_index",
                FORMAT_KEY,
            ]
        )
        assert str(archive[FORMAT_KEY]) == FORMAT_VALUE
        assert archive["diffraction"].dtype == np.float32
        assert archive["probeGuess"].dtype == archive["objectGuess"].dtype == np.complex64
        assert archive["xcoords"].dtype == np.float64 and archive["scan_index"].dtype == np.int64
    minimal = {k: arrays[k] for k in ("diffraction", "xcoords", "ycoords", "probeGuess")}
    save_npz(as_data(minimal), path)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(
            ["diffraction", "probeGuess", "xcoords", "ycoords", FORMAT_KEY]
        )
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.npz"]


def test_save_refuses_invalid_data_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.npz"
    save_npz(as_data(valid_arrays()), path)
    before = path.read_bytes()
    arrays = valid_arrays(seed=3)
    arrays["diffraction"][0, 0, 0] = np.nan
    with pytest.raises(DataContractError, match="'diffraction'"):
        save_npz(as_data(arrays), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.npz"]


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX-only")
def test_a_write_failing_midway_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    """Simulate a full disk: the file-size limit makes the writer fail inside np.savez."""
    import resource
    import signal

    path = tmp_path / "data.npz"
    save_npz(as_data(valid_arrays(n=2)), path)
    before = path.read_bytes()
    big = as_data(valid_arrays(n=64, N=32, seed=5))  # ≈ 270 kB, far above the limit below
    limit = 64 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(OSError) as error:
            save_npz(big, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert error.value.errno == 27  # EFBIG: the write really failed midway
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz"]
    np.testing.assert_array_equal(load_npz(path).xcoords, valid_arrays(n=2)["xcoords"])


def test_save_keeps_the_existing_file_mode(tmp_path):
    path = tmp_path / "mode.npz"
    save_npz(as_data(valid_arrays()), path)
    os.chmod(path, 0o640)
    save_npz(as_data(valid_arrays(seed=1)), path)
    assert path.stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- property tests


@st.composite
def datasets(draw) -> dict:
    N = draw(st.sampled_from([2, 4, 6, 8, 10, 16]))
    n = draw(st.integers(1, 7))
    H, W = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e4]))  # amplitudes at any scale are valid
    arrays = {
        "diffraction": (scale * rng.uniform(0, 1, (n, N, N))).astype(np.float32),
        "xcoords": rng.uniform(0, W - 1, n),
        "ycoords": rng.uniform(0, H - 1, n),
        "probeGuess": (rng.standard_normal((N, N)) + 1j * rng.standard_normal((N, N))).astype(
            np.complex64
        ),
    }
    if draw(st.booleans()):
        arrays["objectGuess"] = (rng.standard_normal((H, W)) + 1j).astype(np.complex64)
    if draw(st.booleans()):
        arrays["scan_index"] = rng.integers(0, 3, n)
    return arrays


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays=datasets())
def test_round_trip_save_then_load_is_exact(tmp_path, arrays):
    path = tmp_path / "round.npz"
    save_npz(as_data(arrays), path)
    data = load_npz(path)
    assert data.source == str(path)
    for key, field in [
        ("diffraction", "diffraction"),
        ("xcoords", "xcoords"),
        ("ycoords", "ycoords"),
        ("probeGuess", "probe"),
        ("objectGuess", "object"),
        ("scan_index", "scan_index"),
    ]:
        loaded = getattr(data, field)
        if key not in arrays:
            assert loaded is None
            continue
        assert loaded.dtype == np.asarray(arrays[key]).dtype or key == "scan_index"
        np.testing.assert_array_equal(loaded, arrays[key])


def _set(key: str, index_fn, value):
    def mutate(a: dict, rng: np.random.Generator) -> None:
        array = a[key]
        a[key] = array = array.copy()
        array[index_fn(array, rng)] = value

    return mutate


def _anywhere(array: np.ndarray, rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(int(rng.integers(0, s)) for s in array.shape)


MUTATIONS = {
    "diffraction NaN": ("diffraction", _set("diffraction", _anywhere, np.nan)),
    "diffraction inf": ("diffraction", _set("diffraction", _anywhere, np.inf)),
    "diffraction negative": ("diffraction", _set("diffraction", _anywhere, -1e-3)),
    "diffraction non-square": (
        "diffraction",
        lambda a, rng: a.update(diffraction=np.concatenate([a["diffraction"]] * 2, axis=2)),
    ),
    "diffraction odd": (
        "diffraction",
        lambda a, rng: a.update(diffraction=np.pad(a["diffraction"], ((0, 0), (0, 1), (0, 1)))),
    ),
    "diffraction complex": (
        "diffraction",
        lambda a, rng: a.update(diffraction=a["diffraction"].astype(np.complex64)),
    ),
    "diffraction extra pattern": (
        "diffraction",
        lambda a, rng: a.update(diffraction=np.concatenate([a["diffraction"]] * 2)),
    ),
    "xcoords NaN": ("xcoords", _set("xcoords", _anywhere, np.nan)),
    "ycoords inf": ("ycoords", _set("ycoords", _anywhere, -np.inf)),
    "ycoords longer": ("ycoords", lambda a, rng: a.update(ycoords=np.append(a["ycoords"], 0.0))),
    "probe size": (
        "probeGuess",
        lambda a, rng: a.update(probeGuess=np.pad(a["probeGuess"], 1)),
    ),
    "probe NaN": ("probeGuess", _set("probeGuess", _anywhere, np.nan)),
    "probe integer": (
        "probeGuess",
        lambda a, rng: a.update(probeGuess=np.ones(a["probeGuess"].shape, np.int32)),
    ),
    "object NaN": ("objectGuess", _set("objectGuess", _anywhere, np.nan)),
    "position outside object": (
        "objectGuess",
        lambda a, rng: a["xcoords"].__setitem__(
            int(rng.integers(0, len(a["xcoords"]))), a["objectGuess"].shape[1] - 1 + 0.5
        ),
    ),
    "scan_index length": (
        "scan_index",
        lambda a, rng: a.update(scan_index=np.append(a["scan_index"], 0)),
    ),
    "scan_index float": (
        "scan_index",
        lambda a, rng: a.update(scan_index=a["scan_index"].astype(np.float32)),
    ),
}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(arrays=datasets(), name=st.sampled_from(sorted(MUTATIONS)), seed=st.integers(0, 2**16))
def test_any_single_violation_is_reported_with_the_right_key(tmp_path, arrays, name, seed):
    key, mutate = MUTATIONS[name]
    if key in ("objectGuess", "scan_index") and key not in arrays:
        arrays[key] = (
            np.ones((12, 12), np.complex64)
            if key == "objectGuess"
            else np.zeros(len(arrays["xcoords"]), int)
        )
    mutate(arrays, np.random.default_rng(seed))
    path = write(tmp_path / "mutant.npz", arrays)
    with warnings.catch_warnings():
        # Raw files with n == N warn about the ambiguous layout before the error.
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(DataContractError) as error:
            load_npz(path)
    assert_contract_error(error, path, key)

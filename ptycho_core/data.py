"""The NPZ data contract (specs/data-contract.md): reading, validating and writing datasets.

Every dataset enters ptycho through :func:`validate` (directly, or via :func:`load_npz`),
so the rest of the code can rely on one layout: ``diffraction`` (n, N, N) float32
amplitudes with zero frequency at (N/2, N/2), positions in object pixels (x = column,
y = row), a complex64 (N, N) probe. A file that breaks the contract raises
:class:`~ptycho_core.errors.DataContractError` naming the file, the key, what was
expected and what was found; loading never unpickles.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core._atomic import atomic_path
from ptycho_core.errors import DataContractError
from ptycho_core.limits import MAX_CANVAS_PIXELS, MAX_COORDINATE, MAX_PROBE_MODES
from ptycho_core.npz import NpzReader, open_npz

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VALUE",
    "LAYOUTS",
    "PtychoData",
    "load_npz",
    "save_npz",
    "validate",
]

#: Share of the probe power other modes may carry before taking mode 0 warns.
MODE_POWER_WARN_FRACTION = 0.01
#: Optional NPZ key (a 0-d string array) that ``save_npz`` writes: it declares the file
#: canonical, so an (n, N, N) array with n == N is not reported as possibly legacy.
FORMAT_KEY = "ptycho_format"
FORMAT_VALUE = "ptycho-npz/1"


@dataclass(frozen=True, eq=False, kw_only=True)
class PtychoData:
    """One validated ptychography dataset in memory (the NPZ contract's content)."""

    diffraction: np.ndarray
    """(n, N, N) float32 diffraction amplitudes, zero frequency at (N/2, N/2), any scale."""
    xcoords: np.ndarray
    """(n,) float64 probe-centre columns in object pixels."""
    ycoords: np.ndarray
    """(n,) float64 probe-centre rows in object pixels."""
    probe: np.ndarray
    """(N, N) complex64 probe (``probeGuess``)."""
    object: np.ndarray | None = None
    """(H, W) complex64 ground-truth object (``objectGuess``), when known."""
    scan_index: np.ndarray | None = None
    """(n,) int64 scan each pattern belongs to, when given."""
    source: str = "<memory>"
    """Where the data came from (a file path), used in error messages."""

    @property
    def N(self) -> int:
        return int(self.diffraction.shape[1])

    @property
    def n_positions(self) -> int:
        return int(self.diffraction.shape[0])


# --------------------------------------------------------------------------- helpers


def _error(source: str, key: str, expected: str, found: str, hint: str = "") -> DataContractError:
    message = f"{source}: key '{key}': expected {expected}, found {found}"
    if hint:
        message += f" ({hint})"
    return DataContractError(message)


def _describe(array: np.ndarray) -> str:
    return f"shape {array.shape} dtype {array.dtype}"


def _as_array(value: Any, source: str, key: str) -> np.ndarray:
    """``np.asarray`` that reports ragged or otherwise unconvertible input as a contract error."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise _error(source, key, "an array", f"{type(value).__name__} ({error})") from error


def _require_ndim(
    array: np.ndarray, ndims: tuple[int, ...], source: str, key: str, what: str
) -> None:
    if array.ndim not in ndims:
        raise _error(source, key, what, f"{array.ndim}-D {_describe(array)}")


def _require_finite(array: np.ndarray, source: str, key: str) -> None:
    if array.dtype.kind not in "fc":
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = np.argwhere(~finite)
        first = tuple(int(i) for i in bad[0])
        raise _error(
            source,
            key,
            "finite values only",
            f"{len(bad)} NaN/inf value(s), the first at index {first} = {array[first]!r}",
        )


def _real_float_or_complex(array: np.ndarray, source: str, key: str, what: str) -> np.ndarray:
    """Check a probe/object dtype (complex, or real float = zero phase); cast to complex64."""
    if array.dtype.kind not in "fc":
        raise _error(source, key, what, f"dtype {array.dtype}")
    return array.astype(np.complex64, copy=False)


def _coordinates(value: Any, source: str, key: str) -> np.ndarray:
    array = _as_array(value, source, key)
    _require_ndim(array, (1,), source, key, "a 1-D (n,) array of positions in object pixels")
    if array.dtype.kind not in "iuf":
        raise _error(source, key, "real numbers (float64 object pixels)", f"dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    _require_finite(array, source, key)
    if array.size and (largest := float(np.abs(array).max())) > MAX_COORDINATE.value:
        raise _error(source, key, "scan positions", MAX_COORDINATE.exceeded(largest, "pixels"))
    return array


def _diffraction_values(
    array: np.ndarray, source: str, key: str, *, is_intensity: bool
) -> np.ndarray:
    """Check dtype, finiteness and sign of the patterns; return float32 amplitudes."""
    kind = array.dtype.kind
    quantity = "intensities" if is_intensity else "amplitudes"
    if kind in "iu" and not is_intensity:
        raise _error(
            source,
            key,
            "float32 amplitudes",
            f"integer dtype {array.dtype}",
            "integer patterns look like photon counts: store counts as 'diff3d' "
            "or load with diffraction_is_intensity=True",
        )
    if kind not in "fiu":
        raise _error(source, key, f"real float {quantity} (float32)", f"dtype {array.dtype}")
    _require_finite(array, source, key)
    if array.size and (minimum := array.min()) < 0:
        where = tuple(int(i) for i in np.unravel_index(int(np.argmin(array)), array.shape))
        raise _error(
            source, key, f"non-negative {quantity}", f"minimum {minimum!r} at index {where}"
        )
    if is_intensity:
        amplitude = array.astype(np.float32)  # float32 holds any count to 6e-8 relative
        np.sqrt(amplitude, out=amplitude)
        return amplitude
    return array.astype(np.float32, copy=False)


def _layout(
    diffraction: np.ndarray, n: int, source: str, key: str, *, warn_ambiguous: bool
) -> np.ndarray:
    """Put the pattern axis first, accepting legacy (N, N, n) arrays (with a warning)."""
    _require_ndim(diffraction, (3,), source, key, "a 3-D (n, N, N) array")
    shape = diffraction.shape
    if n == 0 or shape[0] == 0:
        raise _error(
            source, key, "at least one diffraction pattern", f"shape {shape} with {n} positions"
        )
    if shape[0] == n:
        if warn_ambiguous and shape[0] == shape[1] == shape[2]:
            warnings.warn(
                f"{source}: key '{key}' has shape {shape} with n = N = {n}: the layout is "
                "ambiguous; kept as (n, N, N)",
                UserWarning,
                stacklevel=4,
            )
        return diffraction
    if shape[2] == n and shape[0] == shape[1]:
        warnings.warn(
            f"{source}: key '{key}' has the legacy (N, N, n) layout {shape}; transposed to "
            f"({n}, {shape[0]}, {shape[1]})",
            UserWarning,
            stacklevel=4,
        )
        return np.ascontiguousarray(diffraction.transpose(2, 0, 1))
    raise _error(
        source,
        key,
        f"n = len(xcoords) = {n} patterns on axis 0 (or axis 2 of a legacy (N, N, n) array)",
        f"shape {shape}",
    )


def _probe(value: Any, N: int, source: str, key: str) -> np.ndarray:
    probe = _as_array(value, source, key)
    _require_ndim(probe, (2, 3), source, key, f"a 2-D ({N}, {N}) probe or 3-D (modes, {N}, {N})")
    probe = _real_float_or_complex(probe, source, key, "a complex (or real float) probe")
    _require_finite(probe, source, key)
    if probe.shape[-2:] != (N, N):
        raise _error(
            source, key, f"a ({N}, {N}) probe matching the {N}×{N} patterns", f"shape {probe.shape}"
        )
    if probe.ndim == 3:
        if probe.shape[0] == 0:
            raise _error(source, key, "at least one probe mode", f"shape {probe.shape}")
        if probe.shape[0] > 1:
            power = np.sum(np.abs(probe.astype(np.complex128)) ** 2, axis=(1, 2))
            others = float(power[1:].sum() / power.sum()) if power.sum() > 0 else 0.0
            if others > MODE_POWER_WARN_FRACTION:
                warnings.warn(
                    f"{source}: key '{key}' has {probe.shape[0]} probe modes; using mode 0 and "
                    f"dropping modes that carry {others:.1%} of the probe power",
                    UserWarning,
                    stacklevel=4,
                )
        probe = probe[0]
    if not np.any(probe):
        raise _error(source, key, "a probe with non-zero values", "all zeros")
    return probe


def _object(value: Any, x: np.ndarray, y: np.ndarray, source: str, key: str) -> np.ndarray:
    obj = _as_array(value, source, key)
    _require_ndim(obj, (2,), source, key, "a 2-D (H, W) object")
    if obj.size > MAX_CANVAS_PIXELS.value:
        raise _error(source, key, "an object", MAX_CANVAS_PIXELS.exceeded(obj.size, "pixels"))
    obj = _real_float_or_complex(obj, source, key, "a complex (or real float) object")
    _require_finite(obj, source, key)
    height, width = obj.shape
    inside = (x.min() >= 0) & (x.max() <= width - 1) & (y.min() >= 0) & (y.max() <= height - 1)
    if not inside:
        raise _error(
            source,
            key,
            "an object array containing every scan position (0 <= xcoords <= W-1, "
            "0 <= ycoords <= H-1)",
            f"shape (H, W) = {obj.shape} with xcoords in [{x.min():.6g}, {x.max():.6g}] and "
            f"ycoords in [{y.min():.6g}, {y.max():.6g}]",
        )
    return obj


def _check_scan_extent(x: np.ndarray, y: np.ndarray, N: int, source: str) -> None:
    """The canvas a reconstruction of this scan needs must fit the canvas bound (checked
    here, before any computation, rather than when the result is stitched)."""
    height = float(y.max() - y.min()) + N + 2
    width = float(x.max() - x.min()) + N + 2
    if height * width > MAX_CANVAS_PIXELS.value:
        raise _error(
            source,
            "xcoords",
            "scan positions spanning a canvas of bounded size",
            f"a {height:.0f} × {width:.0f} canvas: "
            + MAX_CANVAS_PIXELS.exceeded(height * width, "pixels"),
        )


def _scan_index(value: Any, n: int, source: str, key: str) -> np.ndarray:
    index = _as_array(value, source, key)
    _require_ndim(index, (1,), source, key, f"a 1-D ({n},) integer array")
    if index.dtype.kind not in "iu":
        raise _error(source, key, "integers (int64)", f"dtype {index.dtype}")
    if index.shape[0] != n:
        raise _error(source, key, f"{n} entries, one per pattern", f"shape {index.shape}")
    return index.astype(np.int64, copy=False)


def _validated(
    *,
    diffraction: Any,
    xcoords: Any,
    ycoords: Any,
    probe: Any,
    obj: Any,
    scan_index: Any,
    source: str,
    diffraction_key: str = "diffraction",
    position_keys: tuple[str, str] = ("xcoords", "ycoords"),
    is_intensity: bool = False,
    warn_ambiguous: bool = False,
) -> PtychoData:
    """The shared checks of :func:`validate` and :func:`load_npz` (order matters for messages)."""
    x_key, y_key = position_keys
    x = _coordinates(xcoords, source, x_key)
    y = _coordinates(ycoords, source, y_key)
    if x.shape != y.shape:
        raise _error(source, y_key, f"{x.shape[0]} entries like '{x_key}'", f"shape {y.shape}")
    n = x.shape[0]

    patterns = _as_array(diffraction, source, diffraction_key)
    patterns = _layout(patterns, n, source, diffraction_key, warn_ambiguous=warn_ambiguous)
    _, rows, cols = patterns.shape
    if rows != cols:
        raise _error(
            source, diffraction_key, "square (n, N, N) patterns", f"shape {patterns.shape}"
        )
    if rows < 2 or rows % 2:
        raise _error(
            source, diffraction_key, "an even pattern size N >= 2", f"N = {rows} ({patterns.shape})"
        )
    patterns = _diffraction_values(patterns, source, diffraction_key, is_intensity=is_intensity)

    _check_scan_extent(x, y, rows, source)
    return PtychoData(
        diffraction=patterns,
        xcoords=x,
        ycoords=y,
        probe=_probe(probe, rows, source, "probeGuess"),
        object=None if obj is None else _object(obj, x, y, source, "objectGuess"),
        scan_index=None if scan_index is None else _scan_index(scan_index, n, source, "scan_index"),
        source=source,
    )


# --------------------------------------------------------------------------- public API


def validate(data: PtychoData) -> PtychoData:
    """Check an in-memory dataset against the contract; return it with canonical dtypes.

    The same rules as :func:`load_npz` (errors name ``data.source`` and the NPZ key:
    ``probe`` is ``probeGuess``, ``object`` is ``objectGuess``). ``diffraction`` must
    already hold amplitudes. ``PtychoData`` is (n, N, N) by definition, so n == N is not
    reported as ambiguous here (a legacy (N, N, n) array with n != N is still transposed).
    Dtypes are cast (float64 → float32, complex128/real → complex64, integer positions →
    float64); arrays already canonical are not copied.
    """
    if not isinstance(data, PtychoData):
        raise TypeError(f"validate: expected a PtychoData, found {type(data).__name__}")
    return _validated(
        diffraction=data.diffraction,
        xcoords=data.xcoords,
        ycoords=data.ycoords,
        probe=data.probe,
        obj=data.object,
        scan_index=data.scan_index,
        source=data.source,
    )


_REQUIRED = ("xcoords", "ycoords", "probeGuess")
_OPTIONAL = ("objectGuess", "scan_index")
_START_POSITIONS = ("xcoords_start", "ycoords_start")

LAYOUTS = ("ptycho", "upstream")
"""How :func:`load_npz` reads a file: this contract, or upstream PtychoPINN's conventions."""


def _check_headers(
    reader: NpzReader, diffraction_key: str, positions: tuple[str, str], source: str
) -> None:
    """Refuse declared shapes the contract cannot accept before any array is allocated."""
    n = reader.header(positions[0]).shape
    for key, ndims, what in (
        *((key, (1,), "a 1-D (n,) array of positions in object pixels") for key in positions),
        (diffraction_key, (3,), "a 3-D (n, N, N) array"),
        ("probeGuess", (2, 3), "a 2-D (N, N) probe or 3-D (modes, N, N)"),
        ("objectGuess", (2,), "a 2-D (H, W) object"),
        ("scan_index", (1,), f"a 1-D {n} integer array"),
    ):
        if key in reader.keys and len(shape := reader.header(key).shape) not in ndims:
            raise _error(source, key, what, f"{len(shape)}-D {reader.header(key).describe()}")
    patterns = reader.header(diffraction_key).shape
    N = patterns[1]
    square = patterns[2] == N or patterns[0] == N
    probe = reader.header("probeGuess").shape
    if square and N >= 2 and N % 2 == 0 and probe[-2:] != (N, N):
        raise _error(
            source, "probeGuess", f"a ({N}, {N}) probe matching the {N}×{N} patterns", str(probe)
        )
    if len(probe) == 3 and probe[0] > MAX_PROBE_MODES.value:
        raise _error(source, "probeGuess", "a probe", MAX_PROBE_MODES.exceeded(probe[0], "modes"))
    if "objectGuess" in reader.keys:
        pixels = reader.header("objectGuess").size
        if pixels > MAX_CANVAS_PIXELS.value:
            raise _error(
                source, "objectGuess", "an object", MAX_CANVAS_PIXELS.exceeded(pixels, "pixels")
            )


def _read_members(
    path: Path, source: str, layout: str
) -> tuple[str, tuple[str, str], dict[str, np.ndarray | None], bool]:
    """The members the contract uses, their headers checked first (others are not read)."""
    with open_npz(path) as reader:
        keys = reader.keys
        diffraction_key = "diffraction" if "diffraction" in keys else "diff3d"
        positions = ("xcoords", "ycoords")
        if layout == "upstream" and set(_START_POSITIONS) <= set(keys):
            positions = _START_POSITIONS
        missing = [k for k in (diffraction_key, *_REQUIRED) if k not in keys]
        if missing:
            names = [
                "'diffraction' (or legacy 'diff3d')" if k == diffraction_key else f"'{k}'"
                for k in missing
            ]
            raise DataContractError(
                f"{source}: key {', '.join(names)}: expected the required key(s) to be present, "
                f"found them missing (keys in the file: {sorted(keys)})"
            )
        _check_headers(reader, diffraction_key, positions, source)
        arrays: dict[str, np.ndarray | None] = {
            key: reader.read(key) if key in keys else None
            for key in (diffraction_key, *positions, "probeGuess", *_OPTIONAL)
        }
        canonical = False
        if FORMAT_KEY in keys:
            with contextlib.suppress(DataContractError):
                header = reader.header(FORMAT_KEY)
                if header.shape == () and header.dtype.kind == "U" and header.nbytes <= 256:
                    canonical = str(reader.read(FORMAT_KEY)) == FORMAT_VALUE
    return diffraction_key, positions, arrays, canonical


def load_npz(
    path: str | os.PathLike[str],
    *,
    diffraction_is_intensity: bool | None = None,
    layout: str = "ptycho",
) -> PtychoData:
    """Read and validate an NPZ dataset (never unpickles).

    Patterns come from ``diffraction`` (amplitudes by default) or, when that key is
    absent, from legacy ``diff3d`` (intensities by default; converted with a square root).
    ``diffraction_is_intensity`` overrides either default. Extra keys are ignored, except
    the ``ptycho_format`` marker that :func:`save_npz` writes: with it, an (n, N, N) array
    with n == N is taken as it is without the "ambiguous layout" warning.

    ``layout='upstream'`` reads a file with upstream PtychoPINN's conventions instead:
    ``diff3d`` holds amplitudes too, and the positions are ``xcoords_start`` /
    ``ycoords_start`` when the file has both (the ones upstream's network and stitching
    use), else ``xcoords`` / ``ycoords`` (specs/data-contract.md §4.4).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"load_npz: layout must be one of {', '.join(LAYOUTS)}, found {layout!r}")
    if diffraction_is_intensity is not None and not isinstance(diffraction_is_intensity, bool):
        raise TypeError(
            "load_npz: diffraction_is_intensity must be None, True or False, found "
            f"{diffraction_is_intensity!r}"
        )
    source = os.fspath(path)
    diffraction_key, positions, arrays, canonical = _read_members(Path(source), source, layout)
    if diffraction_is_intensity is None:
        diffraction_is_intensity = diffraction_key == "diff3d" and layout == "ptycho"
    return _validated(
        diffraction=arrays[diffraction_key],
        xcoords=arrays[positions[0]],
        ycoords=arrays[positions[1]],
        probe=arrays["probeGuess"],
        obj=arrays["objectGuess"],
        scan_index=arrays["scan_index"],
        source=source,
        diffraction_key=diffraction_key,
        position_keys=positions,
        is_intensity=diffraction_is_intensity,
        warn_ambiguous=not canonical,
    )


def save_npz(data: PtychoData, path: str | os.PathLike[str]) -> None:
    """Validate ``data`` and write it atomically as a contract NPZ (amplitudes in ``diffraction``).

    A failure at any point leaves an existing file at ``path`` untouched.
    """
    checked = validate(data)
    arrays: dict[str, np.ndarray] = {
        "diffraction": checked.diffraction,
        "xcoords": checked.xcoords,
        "ycoords": checked.ycoords,
        "probeGuess": checked.probe,
    }
    if checked.object is not None:
        arrays["objectGuess"] = checked.object
    if checked.scan_index is not None:
        arrays["scan_index"] = checked.scan_index
    arrays[FORMAT_KEY] = np.array(FORMAT_VALUE)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        # A file object, not a name: np.savez would append '.npz' to the temporary name.
        np.savez(handle, allow_pickle=False, **arrays)

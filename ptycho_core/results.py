"""Reconstruction files (``reconstruction.npz``) and their comparison with ground truth."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho_core._atomic import atomic_path
from ptycho_core.data import PtychoData
from ptycho_core.errors import DataContractError
from ptycho_core.limits import MAX_CANVAS_PIXELS
from ptycho_core.metrics import evaluate
from ptycho_core.npz import open_npz
from ptycho_core.stitching import Stitched

__all__ = [
    "TruthComparison",
    "compare_with_truth",
    "evaluate_stitched",
    "load_reconstruction",
    "save_reconstruction",
]

_KEYS = ("amplitude", "phase", "object", "weight", "origin")


def save_reconstruction(stitched: Stitched, path: str | os.PathLike[str], *, backend: str) -> Path:
    """Write ``amplitude``, ``phase``, ``object``, ``weight``, ``origin`` and ``backend``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            amplitude=stitched.amplitude.astype(np.float32),
            phase=stitched.phase.astype(np.float32),
            object=stitched.image.astype(np.complex64),
            weight=stitched.weight.astype(np.float32),
            origin=np.asarray(stitched.origin, dtype=np.int64),
            backend=np.array(backend),
        )
    return Path(path)


def load_reconstruction(path: str | os.PathLike[str]) -> Stitched:
    """Read a file written by :func:`save_reconstruction` (bounded; never unpickles)."""
    source = Path(path)

    def fail(message: str) -> DataContractError:
        return DataContractError(f"{source}: {message}")

    with open_npz(source) as reader:
        missing = [key for key in _KEYS if key not in reader.keys]
        if missing:
            raise fail(
                f"key '{missing[0]}': expected a reconstruction file with keys "
                f"{', '.join(_KEYS)}, found {', '.join(sorted(reader.keys)) or 'no keys'}"
            )
        image, weight, origin = (reader.header(key) for key in ("object", "weight", "origin"))
        if (
            len(image.shape) != 2
            or image.dtype.kind not in "fc"
            or weight.shape != image.shape
            or weight.dtype.kind != "f"
            or origin.shape != (2,)
            or origin.dtype.kind not in "iu"
        ):
            raise fail(
                "key 'object': expected a 2-D complex image, a float weight map of the same "
                f"shape and a 2-element integer origin, found {image.describe()}, "
                f"{weight.describe()}, {origin.describe()}"
            )
        if image.size > MAX_CANVAS_PIXELS.value:
            raise fail(f"key 'object': {MAX_CANVAS_PIXELS.exceeded(image.size, 'pixels')}")
        stitched = Stitched(
            image=reader.read("object").astype(np.complex128),
            weight=reader.read("weight").astype(np.float64),
            origin=tuple(int(v) for v in reader.read("origin")),
        )
    if not (np.all(np.isfinite(stitched.image)) and np.all(np.isfinite(stitched.weight))):
        raise fail("key 'object': expected finite values, found NaN or inf")
    return stitched


def _in_object_frame(
    stitched: Stitched, shape: tuple[int, int], source: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, covered)`` of the canvas placed in an object frame of ``shape`` through
    its origin; pixels outside the canvas are 0 and not covered."""
    frame = np.zeros(shape, dtype=np.complex128)
    covered = np.zeros(shape, dtype=bool)
    row0, col0 = stitched.origin
    h, w = stitched.image.shape
    r_lo, c_lo = max(row0, 0), max(col0, 0)
    r_hi, c_hi = min(row0 + h, shape[0]), min(col0 + w, shape[1])
    if r_lo >= r_hi or c_lo >= c_hi:
        raise DataContractError(
            f"{source}: key 'objectGuess': the reconstruction (origin {stitched.origin}, "
            f"shape {stitched.image.shape}) does not overlap the object {shape}"
        )
    src = (slice(r_lo - row0, r_hi - row0), slice(c_lo - col0, c_hi - col0))
    frame[r_lo:r_hi, c_lo:c_hi] = stitched.image[src]
    covered[r_lo:r_hi, c_lo:c_hi] = stitched.covered[src]
    return frame, covered


def _truth(data: PtychoData) -> np.ndarray:
    if data.object is None:
        raise DataContractError(
            f"{data.source}: key 'objectGuess': expected a ground-truth object to evaluate "
            "against, found none"
        )
    return data.object


def evaluate_stitched(stitched: Stitched, data: PtychoData) -> dict[str, float]:
    """Metrics of a stitched reconstruction against the dataset's ``objectGuess``.

    The canvas is placed in the object's frame through its origin; only pixels that
    the reconstruction covers and that lie inside the object are compared.
    """
    truth = _truth(data)
    frame, covered = _in_object_frame(stitched, truth.shape, data.source)
    return evaluate(frame, truth, mask=covered)


@dataclass(frozen=True, eq=False, kw_only=True)
class TruthComparison:
    """Ground truth and reconstruction prepared to be drawn side by side.

    All four images cover the same field of view (the bounding box of the covered
    pixels, in object pixels ``rows`` × ``cols``) and are NaN outside the covered
    pixels, so neither shows what the other lacks. Each pair shares one display
    range, the ground truth's over the covered pixels, so equal values look equal.
    """

    true_amplitude: np.ndarray
    """(h, w) float64 |truth|."""
    reconstructed_amplitude: np.ndarray
    """(h, w) float64 |reconstruction| × ``amplitude_scale``."""
    true_phase: np.ndarray
    """(h, w) float64 arg(truth), radians."""
    reconstructed_phase: np.ndarray
    """(h, w) float64 arg(reconstruction · e^(−i·``phase_offset``)), radians."""
    amplitude_range: tuple[float, float]
    """(low, high) grey scale shared by the amplitude images."""
    phase_range: tuple[float, float]
    """(low, high) colour scale shared by the phase images."""
    amplitude_scale: float
    """Factor applied to the reconstructed amplitude."""
    phase_offset: float
    """Global phase removed from the reconstruction: arg Σ conj(truth)·reconstruction."""
    rows: slice
    """Object rows shown."""
    cols: slice
    """Object columns shown."""


def _display_range(truth: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """The truth's finite range; both images' if the truth is flat, ±0.5 if both are."""
    low, high = float(np.nanmin(truth)), float(np.nanmax(truth))
    if high - low <= 1e-9 * max(abs(low), abs(high), 1.0):
        low, high = min(low, float(np.nanmin(other))), max(high, float(np.nanmax(other)))
    if high - low <= 1e-9 * max(abs(low), abs(high), 1.0):
        low, high = low - 0.5, high + 0.5
    return low, high


def compare_with_truth(
    stitched: Stitched, data: PtychoData, *, amplitude_scale: float = 1.0
) -> TruthComparison:
    """Truth and reconstruction over the same covered field of view, on shared scales.

    A stitched canvas covers only the scanned region while ``objectGuess`` is the
    whole object, so drawn as they are the two show different fields of view and
    the reconstruction's undetermined amplitude scale and global phase shift its
    colours. Here both are cropped to the bounding box of the covered pixels and
    blanked (NaN) outside them, the reconstructed amplitude is multiplied by
    ``amplitude_scale`` (pass the ``amplitude_scale`` that :func:`evaluate_stitched`
    reports) and the global phase arg Σ conj(truth)·reconstruction over the covered
    pixels is removed from the reconstruction.
    """
    if not (np.isfinite(amplitude_scale) and amplitude_scale > 0):
        raise ValueError(f"amplitude_scale: expected a finite value > 0, found {amplitude_scale!r}")
    truth = _truth(data).astype(np.complex128)
    frame, covered = _in_object_frame(stitched, truth.shape, data.source)
    if not covered.any():
        raise DataContractError(
            f"{data.source}: key 'objectGuess': the reconstruction covers no pixel of the object"
        )
    rows_any, cols_any = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    rows = slice(int(rows_any[0]), int(rows_any[-1]) + 1)
    cols = slice(int(cols_any[0]), int(cols_any[-1]) + 1)
    phase_offset = float(np.angle(np.sum(np.conj(truth[covered]) * frame[covered])))
    box = (rows, cols)
    inside = covered[box]
    gt, rec = truth[box], frame[box] * np.exp(-1j * phase_offset)

    def blank(values: np.ndarray) -> np.ndarray:
        return np.where(inside, values, np.nan)

    true_amplitude = blank(np.abs(gt))
    reconstructed_amplitude = blank(np.abs(rec) * float(amplitude_scale))
    true_phase = blank(np.angle(gt))
    reconstructed_phase = blank(np.angle(rec))
    return TruthComparison(
        true_amplitude=true_amplitude,
        reconstructed_amplitude=reconstructed_amplitude,
        true_phase=true_phase,
        reconstructed_phase=reconstructed_phase,
        amplitude_range=_display_range(true_amplitude, reconstructed_amplitude),
        phase_range=_display_range(true_phase, reconstructed_phase),
        amplitude_scale=float(amplitude_scale),
        phase_offset=phase_offset,
        rows=rows,
        cols=cols,
    )

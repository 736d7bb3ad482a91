"""Ptychodus data ↔ ptycho data: every unit and geometry conversion, in one place.

This module imports numpy, scipy and ``ptycho_core`` only. It reads Ptychodus objects by
duck typing (the attributes it uses exist unchanged in Ptychodus 1.5–1.7), so the same
code serves every supported release. specs/ptychodus.md §3 states the rules:

- **Intensities → amplitudes.** Ptychodus hands over photon counts; the data contract
  stores amplitudes √counts (raw scale, so the mean total counts per pattern can be read
  back from a file as mean Σ amplitude²).
- **Bad pixels** are inpainted in the intensity domain before the square root, with the
  discrete harmonic interpolant of the good pixels (each filled value is the mean of its
  4 neighbours; one sparse solve for the shared mask, all patterns at once).
- **Positions** in metres become object pixels of the input object array:
  ``x = (x_m − centre_x_m) / pixel_width_m + width_px / 2`` (same for y). In Ptychodus
  ≥ 1.6 terms that is ``map_probe_positions_to_object_x_px(...) + 0.5``: Ptychodus anchors
  a probe-sized patch on pixel (N−1)/2 of the object's centred-pixel frame, ptycho on
  pixel N/2 (specs/data-contract.md §3); in 1.5 both the frame and the anchor were
  W/2 and N/2, and the formula is the same.
- **Probe**: mode 0 of the incoherent modes (OPR mode 0); dropping modes that carry
  more than 1 % of the power is logged as a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_core.config import SUPPORTED_N
from ptycho_core.data import MODE_POWER_WARN_FRACTION, PtychoData, validate
from ptycho_core.errors import DataContractError

__all__ = [
    "MappedInput",
    "first_probe_mode",
    "inpaint_bad_pixels",
    "intensities_to_amplitudes",
    "map_reconstruct_input",
    "mean_photons_per_pattern",
    "object_pixels_to_positions",
    "positions_to_object_pixels",
]

logger = logging.getLogger(__name__)

_INPAINT_CHUNK = 1024  # patterns per right-hand-side block of the sparse solve
_SOURCE = "Ptychodus"


# ----------------------------------------------------------------------------- patterns


def inpaint_bad_pixels(patterns: np.ndarray, bad_pixels: np.ndarray | None) -> np.ndarray:
    """Fill the bad pixels of every pattern with the harmonic interpolant of its good ones.

    ``patterns`` is (n, H, W) real (counts); ``bad_pixels`` is a shared (H, W) bool mask
    (None or all False: nothing to do). Each bad pixel's value becomes the mean of its
    4-connected neighbours inside the array, good or filled — the discrete Laplace
    equation with the good pixels as boundary values, solved exactly. Good pixels are
    returned unchanged; filled values lie between the minimum and maximum of the good
    pixels of their pattern (maximum principle). Returns a float64 copy.
    """
    data = np.asarray(patterns)
    if data.ndim != 3:
        raise ValueError(f"inpaint_bad_pixels: expected (n, H, W) patterns, found {data.shape}")
    out = data.astype(np.float64, copy=True)
    if bad_pixels is None:
        return out
    bad = np.asarray(bad_pixels, dtype=bool)
    if bad.shape != data.shape[1:]:
        raise ValueError(
            f"inpaint_bad_pixels: expected a {data.shape[1:]} bad-pixel mask, found {bad.shape}"
        )
    if not bad.any():
        return out
    if bad.all():
        raise DataContractError(
            f"{_SOURCE}: bad pixels: expected some good detector pixels, found every pixel "
            "marked bad (check the bad-pixel mask in Ptychodus's Diffraction settings)"
        )
    from scipy import sparse  # deferred: keeps importing the adapter light
    from scipy.sparse.linalg import splu

    H, W = bad.shape
    index = np.full((H, W), -1, dtype=np.int64)
    index[bad] = np.arange(int(bad.sum()))
    rows, cols = np.nonzero(bad)
    m = rows.size
    degree = np.zeros(m)
    a_i: list[np.ndarray] = []  # bad → bad couplings
    a_j: list[np.ndarray] = []
    g_i: list[np.ndarray] = []  # bad → good sources (flat pixel index)
    g_j: list[np.ndarray] = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < H) & (c >= 0) & (c < W)
        degree += inside
        me = np.flatnonzero(inside)
        r, c = r[inside], c[inside]
        neighbour_bad = bad[r, c]
        a_i.append(me[neighbour_bad])
        a_j.append(index[r[neighbour_bad], c[neighbour_bad]])
        g_i.append(me[~neighbour_bad])
        g_j.append(r[~neighbour_bad] * W + c[~neighbour_bad])
    ai, aj = np.concatenate(a_i), np.concatenate(a_j)
    laplace = sparse.csc_matrix(
        (
            np.concatenate([degree, -np.ones(ai.size)]),
            (np.concatenate([np.arange(m), ai]), np.concatenate([np.arange(m), aj])),
        ),
        shape=(m, m),
    )
    gi, gj = np.concatenate(g_i), np.concatenate(g_j)
    gather = sparse.csr_matrix((np.ones(gi.size), (gi, gj)), shape=(m, H * W))
    solver = splu(laplace)
    flat = out.reshape(out.shape[0], H * W)
    bad_flat = np.flatnonzero(bad.ravel())
    for start in range(0, flat.shape[0], _INPAINT_CHUNK):
        block = flat[start : start + _INPAINT_CHUNK]
        rhs = np.asarray(gather @ block.T)  # (m, chunk)
        block[:, bad_flat] = solver.solve(rhs).T
    return out


def intensities_to_amplitudes(
    patterns: np.ndarray, bad_pixels: np.ndarray | None
) -> tuple[np.ndarray, int, int]:
    """Counts (n, H, W) → float32 amplitudes √counts, bad pixels inpainted first.

    Returns ``(amplitudes, number of bad pixels filled, number of negative values set to
    0)``. Negative values (background-subtracted detectors) are clipped to zero, because
    an amplitude is the square root of a non-negative rate.
    """
    data = np.asarray(patterns)
    if data.dtype.kind not in "iuf":
        raise DataContractError(
            f"{_SOURCE}: diffraction patterns: expected real photon counts, found dtype {data.dtype}"
        )
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        count = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataContractError(
            f"{_SOURCE}: diffraction patterns: expected finite counts, found {count} NaN/inf "
            "value(s) (mark those pixels bad in Ptychodus's Diffraction settings)"
        )
    n_bad = 0 if bad_pixels is None else int(np.count_nonzero(bad_pixels))
    filled = inpaint_bad_pixels(data, bad_pixels)
    negative = filled < 0
    n_negative = int(np.count_nonzero(negative))
    if n_negative:
        filled[negative] = 0.0
    return np.sqrt(filled).astype(np.float32), n_bad, n_negative


def mean_photons_per_pattern(amplitudes: np.ndarray) -> float:
    """Mean over patterns of the total counts Σ amplitude² (float64 sums): nphotons of the data."""
    X = np.asarray(amplitudes, dtype=np.float64)
    if X.ndim != 3 or X.shape[0] == 0:
        raise ValueError(f"mean_photons_per_pattern: expected (n, N, N), found {X.shape}")
    return float(np.einsum("nij,nij->", X, X) / X.shape[0])


# ----------------------------------------------------------------------------- geometry


def _geometry_values(geometry: Any) -> tuple[int, int, float, float, float, float]:
    return (
        int(geometry.width_px),
        int(geometry.height_px),
        float(geometry.pixel_width_m),
        float(geometry.pixel_height_m),
        float(geometry.center_x_m),
        float(geometry.center_y_m),
    )


def _coordinate(position: Any, axis: str) -> float:
    """``x_m`` (Ptychodus ≥ 1.6) or ``coordinate_x_m`` (1.5) of a ProbePosition."""
    value = getattr(position, f"{axis}_m", None)
    if value is None:
        value = getattr(position, f"coordinate_{axis}_m")
    return float(value)


def positions_to_object_pixels(
    positions: Iterable[Any], geometry: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Probe positions in metres → (x, y) in pixels of the object array (ptycho's convention).

    ``x = (x_m − centre_x_m) / pixel_width_m + width_px / 2``: the object pixel that lands
    on patch pixel N/2 (see the module docstring for why this is Ptychodus's own
    geometry). ``geometry`` is the input object's ``ObjectGeometry``.
    """
    width, height, dx, dy, cx, cy = _geometry_values(geometry)
    if not (dx > 0 and dy > 0):
        raise DataContractError(
            f"{_SOURCE}: object pixel size: expected positive values, found "
            f"{dx!r} × {dy!r} m (set the object geometry in Ptychodus)"
        )
    points = list(positions)
    x_m = np.fromiter((_coordinate(p, "x") for p in points), dtype=np.float64, count=len(points))
    y_m = np.fromiter((_coordinate(p, "y") for p in points), dtype=np.float64, count=len(points))
    return (x_m - cx) / dx + width / 2, (y_m - cy) / dy + height / 2


def object_pixels_to_positions(
    x: np.ndarray, y: np.ndarray, geometry: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`positions_to_object_pixels`: object pixels → metres."""
    width, height, dx, dy, cx, cy = _geometry_values(geometry)
    x_m = cx + (np.asarray(x, dtype=np.float64) - width / 2) * dx
    y_m = cy + (np.asarray(y, dtype=np.float64) - height / 2) * dy
    return x_m, y_m


# ----------------------------------------------------------------------------- probe


def first_probe_mode(modes: np.ndarray) -> tuple[np.ndarray, float]:
    """Mode 0 of a (modes, H, W) (or (H, W)) probe, and the power fraction the others carry."""
    array = np.asarray(modes)
    if array.ndim == 2:
        return array.astype(np.complex64), 0.0
    if array.ndim != 3 or array.shape[0] == 0:
        raise DataContractError(
            f"{_SOURCE}: probe: expected (modes, H, W) incoherent modes, found shape {array.shape}"
        )
    power = np.sum(np.abs(array.astype(np.complex128)) ** 2, axis=(1, 2))
    total = float(power.sum())
    others = float(power[1:].sum() / total) if total > 0 else 0.0
    return array[0].astype(np.complex64), others


# ----------------------------------------------------------------------------- input


@dataclass(frozen=True, eq=False, kw_only=True)
class MappedInput:
    """A Ptychodus ``ReconstructInput`` as ptycho data, with what the mapping did."""

    data: PtychoData
    """Amplitudes, object-pixel positions, probe mode 0; ``object`` only when asked for."""
    object_layer: np.ndarray
    """Layer 0 of the input object (complex), whose frame the result is stitched into."""
    n_layers: int
    """Layers of the input object (ptycho reconstructs a single, thin layer)."""
    n_bad_pixels: int
    """Detector pixels inpainted in every pattern."""
    n_negative: int
    """Negative count values set to zero."""
    dropped_mode_power: float
    """Fraction of the probe power in the modes other than mode 0."""

    @property
    def object_shape(self) -> tuple[int, int]:
        return (int(self.object_layer.shape[0]), int(self.object_layer.shape[1]))

    def log_summary(self, log: logging.Logger) -> None:
        """Tell the user (Ptychodus's processing log) what the conversion changed."""
        data = self.data
        log.info(
            "ptycho input: %d patterns of %d×%d, object %d×%d px",
            data.n_positions,
            data.N,
            data.N,
            *self.object_shape,
        )
        if self.n_bad_pixels:
            log.info("inpainted %d bad detector pixels in every pattern", self.n_bad_pixels)
        if self.n_negative:
            log.warning("set %d negative count values to 0", self.n_negative)
        if self.dropped_mode_power > MODE_POWER_WARN_FRACTION:
            log.warning(
                "ptycho uses probe mode 0 only; the other modes carry %.1f%% of the probe power",
                100 * self.dropped_mode_power,
            )
        if self.n_layers > 1:
            log.warning(
                "the input object has %d layers; ptycho reconstructs one thin layer (layer 0's frame)",
                self.n_layers,
            )


def _patterns(parameters: Any) -> np.ndarray:
    patterns = np.asarray(parameters.diffraction_patterns)
    if patterns.ndim != 3 or patterns.shape[0] == 0:
        raise DataContractError(
            f"{_SOURCE}: diffraction patterns: expected a non-empty (n, N, N) stack, found "
            f"shape {patterns.shape}"
        )
    _, height, width = patterns.shape
    if height != width:
        raise DataContractError(
            f"{_SOURCE}: diffraction patterns: expected square N×N patterns (ptycho models "
            f"take N = {', '.join(map(str, SUPPORTED_N))}), found {height}×{width} "
            f"(shape {patterns.shape}); crop the patterns to a square in Ptychodus's "
            "Diffraction settings"
        )
    if height not in SUPPORTED_N:
        raise DataContractError(
            f"{_SOURCE}: diffraction patterns: expected N = "
            f"{', '.join(map(str, SUPPORTED_N))} pixels (the sizes ptycho models support), "
            f"found {height}×{width}; crop or bin the patterns in Ptychodus's Diffraction "
            "settings"
        )
    return patterns


def map_reconstruct_input(parameters: Any, *, include_object: bool = False) -> MappedInput:
    """Convert a Ptychodus ``ReconstructInput`` to validated ptycho data.

    ``include_object`` puts layer 0 of the input object into ``data.object``
    (``objectGuess``: the ground truth for supervised training and for evaluation); it is
    left out, with a warning, when some position lies outside the object array.
    Raises :class:`~ptycho_core.errors.DataContractError` with a message that says what
    to change in Ptychodus.
    """
    patterns = _patterns(parameters)
    n, N, _ = patterns.shape
    amplitudes, n_bad, n_negative = intensities_to_amplitudes(patterns, parameters.bad_pixels)

    product = parameters.product
    positions = list(product.probe_positions)
    if len(positions) != n:
        raise DataContractError(
            f"{_SOURCE}: probe positions: expected one per pattern ({n}), found {len(positions)}"
        )
    obj = product.object_
    x, y = positions_to_object_pixels(positions, obj.get_geometry())
    object_layer = np.asarray(obj.get_layer(0))
    layers = np.asarray(obj.get_array())
    n_layers = int(layers.shape[0]) if layers.ndim == 3 else 1
    if object_layer.ndim != 2 or min(object_layer.shape) < 1:
        raise DataContractError(
            f"{_SOURCE}: object: expected a 2-D object array to reconstruct into, found shape "
            f"{object_layer.shape} (initialise the object in Ptychodus's Object settings)"
        )

    probe, dropped = first_probe_mode(np.asarray(product.probes.get_probe_no_opr().get_array()))
    if probe.shape != (N, N):
        raise DataContractError(
            f"{_SOURCE}: probe: expected {N}×{N} to match the patterns, found {probe.shape} "
            "(the probe and the diffraction patterns must have the same size)"
        )

    ground_truth = None
    if include_object:
        height, width = object_layer.shape
        inside = x.min() >= 0 and y.min() >= 0 and x.max() <= width - 1 and y.max() <= height - 1
        if inside:
            ground_truth = object_layer
        else:
            logger.warning(
                "the input object (%d×%d px) does not contain every scan position "
                "(x in [%.4g, %.4g], y in [%.4g, %.4g]); exporting without objectGuess",
                height,
                width,
                x.min(),
                x.max(),
                y.min(),
                y.max(),
            )
    data = validate(
        PtychoData(
            diffraction=amplitudes,
            xcoords=x,
            ycoords=y,
            probe=probe,
            object=ground_truth,
            scan_index=np.zeros(n, dtype=np.int64),
            source=_SOURCE,
        )
    )
    return MappedInput(
        data=data,
        object_layer=object_layer,
        n_layers=n_layers,
        n_bad_pixels=n_bad,
        n_negative=n_negative,
        dropped_mode_power=dropped,
    )

"""Grouping scan positions into model inputs, and the one data normalisation.

Grouping follows upstream's "sample, then group" (specs/model.md §8): draw seed
positions, then give each seed ``gridsize²`` neighbours found with a KD-tree. Every
random choice comes from one ``numpy.random.default_rng(seed)``, so a group set is a
pure function of the positions and the arguments. Normalisation is the single
statistical one (specs/model.md §6.1): ``X_n = a·X`` with the mean total intensity per
pattern (N/2)².
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ptycho_core.errors import DataContractError
from ptycho_core.geometry import extract_patches

if TYPE_CHECKING:
    from ptycho_core.data import PtychoData

__all__ = ["GroupedData", "group_positions", "make_groups", "normalisation_factor"]

_CHUNK = 1024  # patterns per float64 chunk in normalisation_factor (bounds the temporary)


@dataclass(frozen=True, eq=False, kw_only=True)
class GroupedData:
    """Model-ready groups of gridsize² neighbouring patterns, in the NHWC layout.

    B = number of groups, C = gridsize², positions in object pixels, axis order [x, y].
    """

    diffraction: np.ndarray
    """(B, N, N, C) float32: normalised amplitude X_n = normalisation · X."""
    coords_relative: np.ndarray
    """(B, 1, 2, C) float32: −(position − group centre), upstream's sign convention."""
    coords_offsets: np.ndarray
    """(B, 1, 2, 1) float64: group centre (mean position), used for stitching."""
    nn_indices: np.ndarray
    """(B, C) int64: indices of the grouped patterns in the dataset."""
    normalisation: float
    """a in X_n = a·X: makes the mean total intensity per pattern (N/2)²."""
    object_patches: np.ndarray | None = None
    """(B, N, N, C) complex64 ground-truth object patches, when the dataset has one."""

    @property
    def N(self) -> int:
        return int(self.diffraction.shape[1])

    @property
    def n_groups(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def channels(self) -> int:
        return int(self.diffraction.shape[3])

    @property
    def gridsize(self) -> int:
        return round(self.channels**0.5)

    def select(self, indices: np.ndarray) -> GroupedData:
        """The groups at ``indices`` (same normalisation)."""
        return GroupedData(
            diffraction=self.diffraction[indices],
            coords_relative=self.coords_relative[indices],
            coords_offsets=self.coords_offsets[indices],
            nn_indices=self.nn_indices[indices],
            normalisation=self.normalisation,
            object_patches=None if self.object_patches is None else self.object_patches[indices],
        )


def normalisation_factor(diffraction: np.ndarray) -> float:
    """``a = sqrt((N/2)² / mean_b Σ_hw X²)``: makes the mean pattern intensity (N/2)².

    ``diffraction`` is (n, N, N) or (n, N, N, C) amplitudes of any real dtype; the sum of
    squares is taken in float64 (uint16 data overflows when squared in its own dtype).
    With a channel axis the mean runs over patterns and channels, as upstream's.
    """
    X = np.asarray(diffraction)
    if X.ndim not in (3, 4) or X.shape[0] == 0 or X.shape[1] != X.shape[2] or X.shape[1] == 0:
        raise ValueError(
            "normalisation_factor: diffraction must be (n, N, N) or (n, N, N, C) with n, N ≥ 1, "
            f"found shape {X.shape}"
        )
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise ValueError(f"normalisation_factor: diffraction must be real, found dtype {X.dtype}")
    N = X.shape[1]
    total = 0.0
    for start in range(0, X.shape[0], _CHUNK):
        chunk = X[start : start + _CHUNK].astype(np.float64).ravel()
        total += float(np.dot(chunk, chunk))
    per_pattern = X.shape[0] * (X.shape[3] if X.ndim == 4 else 1)
    mean_intensity = total / per_pattern
    if not np.isfinite(mean_intensity):
        raise ValueError("normalisation_factor: diffraction contains non-finite values")
    if mean_intensity <= 0.0:
        raise DataContractError(
            "normalisation_factor: diffraction is all zero; the normalisation is undefined"
        )
    return float(np.sqrt((N / 2) ** 2 / mean_intensity))


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name}: expected an integer ≥ {minimum}, found {value!r}")
    return int(value)


def group_positions(
    x: np.ndarray,
    y: np.ndarray,
    gridsize: int,
    *,
    n_groups: int | None = None,
    neighbor_count: int = 4,
    seed: int = 42,
    sequential: bool = False,
    scan_index: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (B, C) of ``C = gridsize²`` neighbouring positions per group.

    Seeds are ``n_groups`` positions drawn without replacement, in the order drawn
    (all positions, shuffled, when ``n_groups`` is None; a ``UserWarning`` when more
    were asked for than exist), or the first ``n_groups`` in order if ``sequential``.
    For C > 1 each seed's ``neighbor_count`` (K) nearest other positions are found and
    C of them chosen at random without replacement; the seed itself joins its group
    only when fewer than C other positions exist. Channel order is the order drawn.
    With ``scan_index`` (one integer per position) neighbours come from the seed's own
    scan only: positions of different scans (objects) are never grouped together.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.shape != x.shape:
        raise ValueError(
            f"group_positions: x and y must be 1-D of equal length, found {x.shape}, {y.shape}"
        )
    n = x.shape[0]
    if n == 0:
        raise ValueError("group_positions: no positions to group")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("group_positions: x and y must be finite")
    gridsize = _check_int("gridsize", gridsize, 1)
    K = _check_int("neighbor_count", neighbor_count, 1)
    C = gridsize * gridsize
    if C > 1 and K < C:
        raise ValueError(
            f"neighbor_count: must be ≥ gridsize² = {C} to draw {C} neighbours, found {K}"
        )
    if n < C:
        raise DataContractError(f"gridsize: groups of {C} positions need at least {C}, found {n}")
    if n_groups is not None:
        n_groups = _check_int("n_groups", n_groups, 1)
        if n_groups > n:
            warnings.warn(
                f"n_groups={n_groups} exceeds the {n} positions; using all {n} as seeds",
                UserWarning,
                stacklevel=2,
            )
    n_seeds = n if n_groups is None else min(n_groups, n)

    rng = np.random.default_rng(seed)
    if sequential:
        seeds = np.arange(n_seeds, dtype=np.int64)
    else:
        seeds = rng.choice(n, size=n_seeds, replace=False).astype(np.int64)
    if C == 1:
        return seeds[:, None]

    scans = _scan_labels(scan_index, n)
    per_scan = []
    for scan in np.unique(scans[seeds]):
        members = np.flatnonzero(scans == scan)
        if members.size < C:
            raise DataContractError(
                f"gridsize: groups of {C} positions need at least {C} in every scan, "
                f"found {members.size} in scan {int(scan)}"
            )
        rows = np.flatnonzero(scans[seeds] == scan)
        local = _nearest_others(x[members], y[members], np.searchsorted(members, seeds[rows]), K)
        per_scan.append((rows, members[local]))

    # A random permutation per row (argsort of random keys), first C columns.
    keys = rng.random((n_seeds, max(found.shape[1] for _, found in per_scan)))
    chosen = np.empty((n_seeds, C), dtype=np.int64)
    for rows, found in per_scan:
        order = np.argsort(keys[rows, : found.shape[1]], axis=1, kind="stable")[:, :C]
        picked = np.take_along_axis(found, order, axis=1)
        if picked.shape[1] < C:  # the scan holds exactly C positions: the seed completes it
            picked = np.concatenate([seeds[rows, None], picked], axis=1)
        chosen[rows] = picked
    return chosen


def _scan_labels(scan_index: np.ndarray | None, n: int) -> np.ndarray:
    """One scan label per position (all 0 when ``scan_index`` is None)."""
    if scan_index is None:
        return np.zeros(n, dtype=np.int64)
    labels = np.asarray(scan_index)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"group_positions: scan_index must be ({n},) integers, found {labels.dtype} {labels.shape}"
        )
    return labels.astype(np.int64, copy=False)


def _nearest_others(x: np.ndarray, y: np.ndarray, seeds: np.ndarray, K: int) -> np.ndarray:
    """For each seed, the indices of its (up to) K nearest other positions, nearest first.

    K+1 neighbours are queried (the seed is normally the first); with duplicate positions
    the seed can be missing from its own list, then the farthest candidate is dropped.
    """
    from scipy.spatial import cKDTree  # deferred: `import ptycho_core` stays light

    k_query = min(K + 1, x.shape[0])
    _, idx = cKDTree(np.column_stack([x, y])).query(
        np.column_stack([x[seeds], y[seeds]]), k=k_query
    )
    idx = np.asarray(idx, dtype=np.int64).reshape(seeds.shape[0], k_query)
    seed_last = np.argsort(idx == seeds[:, None], axis=1, kind="stable")
    return np.take_along_axis(idx, seed_last, axis=1)[:, : k_query - 1]


def make_groups(
    data: PtychoData,
    gridsize: int,
    *,
    n_groups: int | None = None,
    neighbor_count: int = 4,
    seed: int = 42,
    sequential: bool = False,
) -> GroupedData:
    """Group a dataset into normalised NHWC model inputs (see :func:`group_positions`).

    The normalisation ``a`` is computed from the whole dataset, so every subset of the
    same dataset sees the same scale. Positions are ``data.xcoords``/``data.ycoords``.
    """
    nn = group_positions(
        data.xcoords,
        data.ycoords,
        gridsize,
        n_groups=n_groups,
        neighbor_count=neighbor_count,
        seed=seed,
        sequential=sequential,
        scan_index=data.scan_index,
    )
    a = normalisation_factor(data.diffraction)
    # (B, C, N, N) gather → NHWC; float32 factor so numpy ≥ 2 keeps float32.
    diffraction = np.ascontiguousarray(
        np.moveaxis(np.asarray(data.diffraction)[nn], 1, -1), dtype=np.float32
    )
    diffraction *= np.float32(a)

    xs = np.asarray(data.xcoords, dtype=np.float64)[nn]
    ys = np.asarray(data.ycoords, dtype=np.float64)[nn]
    coords_nn = np.stack([xs, ys], axis=1)[:, None, :, :]  # (B, 1, 2, C)
    coords_offsets = coords_nn.mean(axis=3, keepdims=True)  # (B, 1, 2, 1)
    coords_relative = (-(coords_nn - coords_offsets)).astype(np.float32)

    object_patches = None
    if data.object is not None:
        B, C = nn.shape
        patches = extract_patches(data.object, xs.ravel(), ys.ravel(), data.N)
        object_patches = np.ascontiguousarray(
            np.moveaxis(patches.reshape(B, C, data.N, data.N), 1, -1), dtype=np.complex64
        )
    return GroupedData(
        diffraction=diffraction,
        coords_relative=coords_relative,
        coords_offsets=coords_offsets,
        nn_indices=nn,
        normalisation=a,
        object_patches=object_patches,
    )

"""Stitching object patches back into one object image (upstream ``reassemble_position``).

Each patch is the object seen at a probe position, in the pixel convention of
:mod:`ptycho_core.geometry`: ``patch[i, j] = object(y + i − N/2, x + j − N/2)``. Only
the central M × M crop of each patch is kept (the edges of predicted patches are poorly
constrained). Every crop is put back with the exact adjoint of geometry's bilinear
gather, and the sum of placed values is divided by the sum of placed weights (the
adjoint applied to ones). Extracting exact patches and stitching them therefore
returns the object wherever it is covered; uncovered pixels are 0 with weight 0.

Accumulation is in float64 with ``np.bincount`` on flat canvas indices: a fixed number
of array passes per chunk of patches, no Python loop over patches.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ptycho_core.errors import DataContractError
from ptycho_core.geometry import extract_patches_spline
from ptycho_core.limits import MAX_CANVAS_PIXELS, MAX_COORDINATE

__all__ = [
    "RESTORE_STEPS",
    "WEIGHT_FLOOR",
    "Stitched",
    "merge_stitched",
    "patches_restoring",
    "stitch_patches",
]

WEIGHT_FLOOR = 1e-9
"""Pixels whose summed weight is at most this are treated as uncovered (image value 0)."""

_CHUNK = 4096  # patches per accumulation pass; bounds the (chunk, M+1, M+1) temporaries


@dataclass(frozen=True, eq=False, kw_only=True)
class Stitched:
    """A stitched object image and the weight (coverage) behind every pixel."""

    image: np.ndarray
    """(H, W) complex128: Σ placed values / Σ placed weights; 0 where uncovered."""
    weight: np.ndarray
    """(H, W) float64: Σ placed bilinear weights (≈ number of crops covering the pixel)."""
    origin: tuple[int, int]
    """(row, col) in object pixels of canvas pixel (0, 0); (0, 0) for a given ``shape``."""

    @property
    def amplitude(self) -> np.ndarray:
        return np.abs(self.image)

    @property
    def phase(self) -> np.ndarray:
        return np.angle(self.image)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @property
    def covered(self) -> np.ndarray:
        """Boolean (H, W) mask of the pixels that hold a value (weight > ``WEIGHT_FLOOR``)."""
        return self.weight > WEIGHT_FLOOR

    def covered_above(self, threshold: float) -> np.ndarray:
        """Boolean (H, W) mask of pixels with weight above ``threshold``; e.g. ``1 - 1e-6``
        keeps only pixels covered by at least one full crop's worth of weight."""
        return self.weight > threshold


def _as_positions(name: str, value: np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"stitch_patches: {name} must have shape ({n},), found {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"stitch_patches: {name} must be finite")
    if n and (largest := float(np.abs(arr).max())) > MAX_COORDINATE.value:
        raise DataContractError(
            f"stitch_patches: {name}: {MAX_COORDINATE.exceeded(largest, 'pixels')}"
        )
    return arr


def _profile(frac: np.ndarray, M: int) -> np.ndarray:
    """(B, M+1) bilinear splat of a line of M ones at fractional offset f: [1−f, 1, …, 1, f]."""
    prof = np.ones((frac.shape[0], M + 1), dtype=np.float64)
    prof[:, 0] = 1.0 - frac
    prof[:, M] = frac
    return prof


def stitch_patches(
    patches: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    M: int = 20,
    shape: tuple[int, int] | None = None,
) -> Stitched:
    """Merge patches seen at probe positions ``(x[b], y[b])`` (object pixels) into one image.

    ``patches`` is (B, N, N) or (B, N, N, 1), real or complex. With ``shape`` the canvas is
    that object frame (origin (0, 0), crops falling outside are clipped); without it the
    canvas is the bounding box of all placed crops and ``origin`` locates it.
    """
    arr = np.asarray(patches)
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            "stitch_patches: patches must be (B, N, N) or (B, N, N, 1) with B, N ≥ 1, "
            f"found shape {np.shape(patches)}"
        )
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"stitch_patches: patches must be numeric, found dtype {arr.dtype}")
    B, N = arr.shape[0], arr.shape[1]
    if isinstance(M, bool) or not isinstance(M, numbers.Integral) or not 1 <= M <= N:
        raise ValueError(f"stitch_patches: M must be an integer in [1, N={N}], found {M!r}")
    M = int(M)
    xs = _as_positions("x", x, B)
    ys = _as_positions("y", y, B)
    if shape is not None:
        if (
            len(shape) != 2
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in shape)
            or min(shape) < 1
        ):
            raise ValueError(f"stitch_patches: shape must be (H, W) positive ints, found {shape!r}")
        shape = (int(shape[0]), int(shape[1]))

    # Crop pixel (u, v) is patch pixel (c0 + u, c0 + v), i.e. object (y + off + u, x + off + v):
    # the crop is centred on the patch's zero-frequency pixel N//2 like an M-pixel patch.
    c0 = N // 2 - M // 2
    off = c0 - N / 2
    row_pos = ys + off
    col_pos = xs + off
    row_base = np.floor(row_pos).astype(np.int64)
    col_base = np.floor(col_pos).astype(np.int64)
    fr = row_pos - row_base
    fc = col_pos - col_base

    if shape is None:
        # Placed rows run from row_base to row_base + M − 1, plus one more if fr > 0.
        row0 = int(row_base.min())
        col0 = int(col_base.min())
        H = int((row_base + M - 1 + (fr > 0)).max()) - row0 + 1
        W = int((col_base + M - 1 + (fc > 0)).max()) - col0 + 1
    else:
        row0, col0 = 0, 0
        H, W = shape
    size = H * W
    if size > MAX_CANVAS_PIXELS.value:
        raise DataContractError(
            f"stitch_patches: the scan positions span a {H} × {W} canvas: "
            f"{MAX_CANVAS_PIXELS.exceeded(size, 'pixels')}"
        )

    is_complex = np.iscomplexobj(arr)
    dtype = np.complex128 if is_complex else np.float64
    acc_re = np.zeros(size + 1, dtype=np.float64)  # last bin collects off-canvas samples
    acc_im = np.zeros(size + 1, dtype=np.float64)
    acc_w = np.zeros(size + 1, dtype=np.float64)
    steps = np.arange(M + 1, dtype=np.int64)
    for start in range(0, B, _CHUNK):
        sl = slice(start, min(start + _CHUNK, B))
        crop = arr[sl, c0 : c0 + M, c0 : c0 + M]
        a_r = fr[sl, None, None]
        a_c = fc[sl, None, None]
        # Separable splat: rows first ((n, M+1, M)), then columns ((n, M+1, M+1)).
        rows = np.zeros((crop.shape[0], M + 1, M), dtype=dtype)
        rows[:, :M] = crop * (1.0 - a_r)
        rows[:, 1:] += crop * a_r
        splat = np.zeros((crop.shape[0], M + 1, M + 1), dtype=dtype)
        splat[:, :, :M] = rows * (1.0 - a_c)
        splat[:, :, 1:] += rows * a_c
        weights = _profile(fr[sl], M)[:, :, None] * _profile(fc[sl], M)[:, None, :]

        r_idx = (row_base[sl] - row0)[:, None] + steps  # (n, M+1)
        c_idx = (col_base[sl] - col0)[:, None] + steps
        flat = r_idx[:, :, None] * W + c_idx[:, None, :]
        # Off-canvas samples (clipped by ``shape``, or the zero-weight extra line when f = 0)
        # go to the dump bin.
        r_in = (r_idx >= 0) & (r_idx < H)
        c_in = (c_idx >= 0) & (c_idx < W)
        flat = np.where(r_in[:, :, None] & c_in[:, None, :], flat, size)
        flat = flat.ravel()
        acc_re += np.bincount(flat, weights=splat.real.ravel(), minlength=size + 1)
        if is_complex:
            acc_im += np.bincount(flat, weights=splat.imag.ravel(), minlength=size + 1)
        acc_w += np.bincount(flat, weights=weights.ravel(), minlength=size + 1)

    weight = acc_w[:size].reshape(H, W)
    values = (acc_re[:size] + 1j * acc_im[:size]).reshape(H, W)
    covered = weight > WEIGHT_FLOOR
    image = np.zeros((H, W), dtype=np.complex128)
    image[covered] = values[covered] / weight[covered]
    return Stitched(image=image, weight=weight, origin=(row0, col0))


def merge_stitched(first: Stitched, second: Stitched) -> Stitched:
    """One image from two stitched parts of the same object, as if stitched together.

    Each pixel is Σ values / Σ weights, so weighting each part's image by its own weight
    and adding reproduces stitching all patches at once; the canvas is the union of the
    two (their origins place them), so parts stitched in chunks can be merged as they come.
    """
    (r_a, c_a), (r_b, c_b) = first.origin, second.origin
    row0, col0 = min(r_a, r_b), min(c_a, c_b)
    H = max(r_a + first.shape[0], r_b + second.shape[0]) - row0
    W = max(c_a + first.shape[1], c_b + second.shape[1]) - col0
    numerator = np.zeros((H, W), dtype=np.complex128)
    weight = np.zeros((H, W), dtype=np.float64)
    for part in (first, second):
        rows = slice(part.origin[0] - row0, part.origin[0] - row0 + part.shape[0])
        cols = slice(part.origin[1] - col0, part.origin[1] - col0 + part.shape[1])
        numerator[rows, cols] += part.image * part.weight
        weight[rows, cols] += part.weight
    image = np.zeros((H, W), dtype=np.complex128)
    covered = weight > WEIGHT_FLOOR
    image[covered] = numerator[covered] / weight[covered]
    return Stitched(image=image, weight=weight, origin=(row0, col0))


RESTORE_STEPS = 5
"""Fixed-point steps of :func:`patches_restoring` (3 already settle a typical scan)."""


def patches_restoring(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, N: int, *, M: int, steps: int = RESTORE_STEPS
) -> np.ndarray:
    """(n, N, N) complex64 patches at ``(x, y)`` (pixels of ``image``) that
    :func:`stitch_patches` with central crops ``M`` turns back into ``image``.

    For a solver whose result is an object image. Sampling it at the positions is not enough:
    stitching splats every crop bilinearly and averages, which blurs an image sampled at
    sub-pixel positions by up to a pixel. So the patches sample an image o fixed by
    ``steps`` iterations of o ← o + (image − stitch(sample(o))) on the covered pixels,
    starting from o = image (sampling is :func:`~ptycho_core.geometry.extract_patches_spline`).
    """
    target = np.asarray(image, dtype=np.complex128)
    estimate = target.copy()
    for _ in range(steps):
        stitched = stitch_patches(
            extract_patches_spline(estimate, x, y, N), x, y, M=M, shape=target.shape
        )
        covered = stitched.covered
        estimate[covered] += target[covered] - stitched.image[covered]
    return extract_patches_spline(estimate, x, y, N)

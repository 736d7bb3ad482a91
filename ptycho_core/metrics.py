"""Reconstruction quality against a ground-truth object, with every convention stated.

Pipeline of :func:`evaluate`:

1. **Crop** to the largest axis-aligned rectangle inside ``mask`` (all pixels when
   None) after eroding the mask by ``border`` pixels (default 2).
2. **Phase offset and ramp**: remove φ0 = arg Σ conj(gt)·rec and a plane fitted by
   weighted least squares to arg(rec·conj(gt)) (weights |rec·conj(gt)|, coordinates
   scaled to [−0.5, 0.5] over the crop). The slopes are first estimated from the mean
   phase step between neighbouring pixels, so ramps of many cycles do not wrap the fit.
3. **Register** sub-pixel: masked normalised cross-correlation of unit phasors (the
   amplitude for an object with flat phase) between the ground-truth crop and the
   reconstruction around it (crop + ``border``), refined to 1/50 px by the upsampled
   DFT of Guizar-Sicairos et al. (as :func:`register_shift`, but immune to crop
   edges). Shift the reconstruction with :func:`fourier_shift` (crop + border,
   reflect-padded) and drop pixels the shift brought in from outside. Steps 2 and 3
   alternate until the shift settles (≤ 3 rounds); step 2 runs once more at the end.
4. **Amplitude scale**: c = Σ|rec|·|gt| / Σ|rec|² (least squares, amplitudes only).
5. **Metrics** on the aligned crop:
   - SSIM: 7×7 uniform window, K1 0.01, K2 0.03, sample covariance, the (7−1)/2 border
     dropped from the mean: identical to ``skimage.metrics.structural_similarity``
     with ``win_size=7, data_range=R``.
   - PSNR = 10·log10(R²/MSE), R = max − min of the ground-truth quantity (never 255);
     R falls back to max|gt quantity| and then 1.0 for a flat ground truth.
   - Phase compares φ_gt with φ_gt + wrap(φ_rec − φ_gt), so a ±π wrap is no error.
     ``phase_ssim`` is the SSIM of these phases in radians with R = the GT phase range
     (the R of ``phase_psnr``), so its constants scale with the object's own phase
     contrast and a flat-phase reconstruction of a phase object scores low.
     ``phase_ssim_upstream`` is upstream PtychoPINN's convention, SSIM of (φ + π)/2π with
     data_range 1 (the same as the SSIM of φ + π in radians with R = 2π): its constants
     are set by a whole 2π cycle, so for an object whose phase range is well below 2π
     it scores a flat phase high (≈ 0.85 on the default simulated test object) and
     leaves little room to show progress.
   - FRC on the complex images (centred square crop, 2-D Tukey taper of
     min(20, side/4) px), rings of rounded radius; resolution = period in pixels at
     the first crossing (linearly interpolated) of the fixed 1/7 (0.143) and the
     half-bit (van Heel & Schatz, n = pixels in the ring) thresholds.

JSON-safe conventions in :func:`evaluate`: PSNR is capped at :data:`PSNR_CAP_DB`
(identical images); an FRC that never drops below threshold reports the Nyquist
period 2.0 px. :func:`psnr` itself returns ``inf`` for identical images.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "FRC_ONE_SEVENTH",
    "NYQUIST_PERIOD",
    "PSNR_CAP_DB",
    "align",
    "evaluate",
    "fourier_shift",
    "frc",
    "frc_resolution",
    "half_bit_threshold",
    "psnr",
    "register_shift",
    "ssim",
]

PSNR_CAP_DB = 200.0
"""PSNR reported by :func:`evaluate` for (numerically) identical images."""
FRC_ONE_SEVENTH = 0.143
"""The fixed 1/7 FRC threshold."""
NYQUIST_PERIOD = 2.0
"""Resolution (px) reported when an FRC curve never crosses its threshold."""
_FRC_TAPER_PX = 20
_MIN_WINDOW = 16  # smallest evaluation rectangle (SSIM needs 7×7, registration some context)


def _as_image(name: str, image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or min(arr.shape) < 1:
        raise ValueError(f"{name}: expected a non-empty 2-D image, found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric image, found dtype {arr.dtype}")
    return arr


def _same_shape(fn: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{fn}: images must have the same shape, found {a.shape} and {b.shape}")


# ----------------------------------------------------------------------------- registration


def _phasor(image: np.ndarray) -> np.ndarray:
    """Unit-amplitude phasor of a complex image (0 stays 0); real images pass through."""
    if not np.iscomplexobj(image):
        return image.astype(np.float64)
    mag = np.abs(image)
    return np.divide(image, mag, out=np.zeros(image.shape, np.complex128), where=mag > 0)


def _upsampled_dft(
    data: np.ndarray, region: int, factor: float, offsets: tuple[float, float]
) -> np.ndarray:
    """Inverse DFT of ``data`` on a ``region``² grid, ``factor``× finer, starting at ``offsets``.

    The matrix-multiply DFT of Guizar-Sicairos et al. (2008): only the neighbourhood of
    the coarse peak is evaluated, at cost O(region · size) instead of a padded FFT.
    """
    n_rows, n_cols = data.shape
    k_rows = np.fft.fftfreq(n_rows, factor)
    k_cols = np.fft.fftfreq(n_cols, factor)
    grid = np.arange(region, dtype=np.float64)
    row_kernel = np.exp(2j * np.pi * np.outer(grid - offsets[0], k_rows))  # (region, n_rows)
    col_kernel = np.exp(2j * np.pi * np.outer(k_cols, grid - offsets[1]))  # (n_cols, region)
    return (row_kernel @ data @ col_kernel) / data.size


def _lags(n: int) -> np.ndarray:
    """Circular lags 0, 1, …, −1 of an axis of length n."""
    return np.fft.fftfreq(n, 1.0 / n)


def _peak(
    score: Callable[[np.ndarray], np.ndarray],
    products: tuple[np.ndarray, ...],
    factor: int,
    max_shift: float | None = None,
) -> tuple[float, float]:
    """Sub-pixel argmax of ``score`` over the inverse DFTs of ``products``.

    The integer peak is found on the full circular lag grid (only |lags| ≤ ``max_shift``
    when given), then refined to 1/``factor`` px with the upsampled DFT of each product
    on a 1.5 px neighbourhood (Guizar-Sicairos et al. 2008).
    """
    coarse = score(*(np.fft.ifft2(p) for p in products))
    dims = np.array(coarse.shape, dtype=np.float64)
    if max_shift is not None:
        allowed = (np.abs(_lags(coarse.shape[0]))[:, None] <= max_shift) & (
            np.abs(_lags(coarse.shape[1]))[None, :] <= max_shift
        )
        coarse = np.where(allowed, coarse, -np.inf)
    peak = np.array(np.unravel_index(np.argmax(coarse), coarse.shape), dtype=np.float64)
    wrap = peak > np.trunc(dims / 2)
    peak[wrap] -= dims[wrap]
    if factor > 1:
        peak = np.round(peak * factor) / factor
        region = math.ceil(factor * 1.5)
        centre = math.trunc(region / 2)
        offsets = (centre - peak[0] * factor, centre - peak[1] * factor)
        fine = score(*(_upsampled_dft(p, region, factor, offsets) for p in products))
        sub = np.array(np.unravel_index(np.argmax(fine), fine.shape), dtype=np.float64)
        peak = peak + (sub - centre) / factor
    peak[dims == 1] = 0.0
    return float(peak[0]), float(peak[1])


def _check_factor(upsample_factor: int) -> int:
    if (
        isinstance(upsample_factor, bool)
        or not isinstance(upsample_factor, numbers.Integral)
        or upsample_factor < 1
    ):
        raise ValueError(f"upsample_factor: expected an integer ≥ 1, found {upsample_factor!r}")
    return int(upsample_factor)


def register_shift(
    reference: np.ndarray,
    moving: np.ndarray,
    upsample_factor: int = 50,
    *,
    normalization: str | None = "phase",
) -> tuple[float, float]:
    """Sub-pixel shift (dy, dx) that registers ``moving`` onto ``reference``.

    ``fourier_shift(moving, dy, dx)`` ≈ ``reference``: the convention and the algorithm
    of ``skimage.registration.phase_cross_correlation`` (Guizar-Sicairos et al. 2008:
    integer peak of the cross-correlation, refined to 1/``upsample_factor`` px by an
    upsampled DFT; ``normalization="phase"`` whitens the cross-power spectrum, None
    keeps the plain correlation). Complex images are registered as unit-amplitude
    phasors so amplitude contrast does not dominate (by amplitude if the reference's
    phase is flat). Both images are taken as periodic.
    """
    ref = _as_image("register_shift: reference", reference)
    mov = _as_image("register_shift: moving", moving)
    _same_shape("register_shift", ref, mov)
    factor = _check_factor(upsample_factor)
    if normalization not in ("phase", None):
        raise ValueError(f"normalization: expected 'phase' or None, found {normalization!r}")
    kind = _registration_signal(ref)
    ref = _signal(ref, kind)
    mov = _signal(mov, kind)
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(mov))):
        raise ValueError("register_shift: images must be finite")
    product = np.fft.fft2(ref) * np.conj(np.fft.fft2(mov))
    if normalization == "phase":
        product /= np.maximum(np.abs(product), 100 * np.finfo(np.float64).eps)
    return _peak(np.abs, (product,), factor)


def fourier_shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """Move the content of ``image`` by ``dy`` rows and ``dx`` columns (periodic, band-limited).

    ``out(r, c) = image(r − dy, c − dx)`` with circular wrap-around; a real image gives a
    real result (the real part).
    """
    arr = _as_image("fourier_shift: image", image)
    ky = np.fft.fftfreq(arr.shape[0])[:, None]
    kx = np.fft.fftfreq(arr.shape[1])[None, :]
    ramp = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    out = np.fft.ifft2(np.fft.fft2(arr) * ramp)
    return out if np.iscomplexobj(arr) else out.real


# ----------------------------------------------------------------------------- alignment


def _largest_rectangle(mask: np.ndarray) -> tuple[slice, slice]:
    """A large axis-aligned rectangle of True pixels: the bounding box, shrunk greedily.

    Starting from the bounding box, the edge line with the most False pixels is removed
    until none is left (exact for rectangular coverage, good for convex coverage).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("align: the mask (after removing the border) selects no pixels")
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    bad = np.pad((~mask).astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)

    def count(a0: int, a1: int, b0: int, b1: int) -> int:
        return int(bad[a1, b1] - bad[a0, b1] - bad[a1, b0] + bad[a0, b0])

    while r1 > r0 and c1 > c0 and count(r0, r1, c0, c1) > 0:
        edges = {
            "top": count(r0, r0 + 1, c0, c1) / (c1 - c0),
            "bottom": count(r1 - 1, r1, c0, c1) / (c1 - c0),
            "left": count(r0, r1, c0, c0 + 1) / (r1 - r0),
            "right": count(r0, r1, c1 - 1, c1) / (r1 - r0),
        }
        worst = max(edges, key=edges.__getitem__)
        if worst == "top":
            r0 += 1
        elif worst == "bottom":
            r1 -= 1
        elif worst == "left":
            c0 += 1
        else:
            c1 -= 1
    if r1 <= r0 or c1 <= c0:
        raise ValueError("align: the mask holds no rectangle of valid pixels")
    return slice(r0, r1), slice(c0, c1)


def _unit_coords(rows: slice, cols: slice, frame: tuple[slice, slice]) -> tuple:
    """Coordinates of the ``rows × cols`` window scaled so ``frame`` spans [−0.5, 0.5]."""

    def axis(s: slice, ref: slice) -> np.ndarray:
        span = max(ref.stop - ref.start - 1, 1)
        return (np.arange(s.start, s.stop, dtype=np.float64) - ref.start) / span - 0.5

    return axis(rows, frame[0])[:, None], axis(cols, frame[1])[None, :]


def _fit_phase_plane(z: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """(a0, ay, ax) with arg z ≈ a0 + ay·y + ax·x, weighted least squares with weights |z|.

    Wrap-safe: the slopes are first estimated from the mean phase step between
    neighbouring pixels (arg Σ z[k+1]·conj(z[k]), exact for ramps below π per pixel),
    then refined by least squares on the wrapped residual.
    """
    h, w = z.shape
    coef = np.zeros(3)
    if h > 1:
        coef[1] = (
            np.angle(np.sum(z[1:, :] * np.conj(z[:-1, :])))
            * (h - 1)
            / max(float(yy[-1, 0] - yy[0, 0]), 1e-300)
        )
    if w > 1:
        coef[2] = (
            np.angle(np.sum(z[:, 1:] * np.conj(z[:, :-1])))
            * (w - 1)
            / max(float(xx[0, -1] - xx[0, 0]), 1e-300)
        )
    weight = np.abs(z)
    total = float(weight.sum())
    if total <= 0:
        return coef
    y = np.broadcast_to(yy, z.shape)
    x = np.broadcast_to(xx, z.shape)
    wy, wx = weight * y, weight * x
    normal = np.array(
        [
            [total, wy.sum(), wx.sum()],
            [wy.sum(), (wy * y).sum(), (wy * x).sum()],
            [wx.sum(), (wx * y).sum(), (wx * x).sum()],
        ]
    )
    for _ in range(2):  # the second pass only polishes; the residual no longer wraps
        resid_z = z * np.exp(-1j * (coef[0] + coef[1] * y + coef[2] * x))
        phi0 = np.angle(np.sum(resid_z))
        resid = np.angle(resid_z * np.exp(-1j * phi0)) + phi0
        rhs = np.array([(weight * resid).sum(), (wy * resid).sum(), (wx * resid).sum()])
        step = np.linalg.lstsq(normal, rhs, rcond=None)[0]
        coef = coef + step
    return coef


@dataclass(frozen=True)
class _Alignment:
    rec: np.ndarray
    gt: np.ndarray
    shift: tuple[float, float]
    scale: float


def _remove_phase(rec: np.ndarray, gt: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """rec with the fitted phase plane of rec·conj(gt) (offset included) removed."""
    a0, ay, ax = _fit_phase_plane(rec * np.conj(gt), yy, xx)
    rec = rec * np.exp(-1j * (a0 + ay * yy + ax * xx))
    phi0 = np.angle(np.sum(np.conj(gt) * rec))
    return rec * np.exp(-1j * phi0)


def _registration_signal(reference: np.ndarray) -> str:
    """'phase' (unit phasors) for complex data unless the reference's phase is flat (an
    amplitude-only object, whose phasors carry no signal), else 'amplitude'."""
    if not np.iscomplexobj(reference):
        return "amplitude"
    ph = _phasor(reference)
    spread = float(np.mean(np.abs(ph - ph.mean()) ** 2))
    return "phase" if spread > 1e-8 else "amplitude"


def _signal(z: np.ndarray, kind: str) -> np.ndarray:
    if kind == "phase":
        return _phasor(z)
    return (np.abs(z) if np.iscomplexobj(z) else z).astype(np.complex128)


def _register_in_context(
    gt_window: np.ndarray,
    context: np.ndarray,
    inner: tuple[slice, slice],
    max_shift: float,
    factor: int,
) -> tuple[float, float]:
    """Shift (dy, dx) that moves ``context`` (rec around the window) onto ``gt_window``.

    Masked normalised cross-correlation: the ground-truth window, trimmed so that every
    candidate shift up to ``max_shift`` stays inside the context, is compared with each
    shifted context over its own support, with the context's mean and energy taken over
    that support. Maximising it is least squares with a free complex gain, so neither
    crop edges nor uneven context energy pull the estimate; sub-pixel shifts are the
    band-limited (upsampled-DFT) interpolation of each term.
    """
    h, w = gt_window.shape
    margin = min(
        inner[0].start,
        inner[1].start,
        context.shape[0] - inner[0].stop,
        context.shape[1] - inner[1].stop,
    )
    search = float(max(0.0, min(max_shift, (min(h, w) - 8) // 4 + margin)))
    t = max(0, math.ceil(search) - margin)
    kind = _registration_signal(gt_window)
    template = _signal(gt_window[t : h - t, t : w - t], kind)
    n = template.size
    support = (
        slice(inner[0].start + t, inner[0].stop - t),
        slice(inner[1].start + t, inner[1].stop - t),
    )
    padded = np.zeros(context.shape, dtype=np.complex128)
    padded[support] = template - template.mean()
    indicator = np.zeros(context.shape, dtype=np.float64)
    indicator[support] = 1.0
    sig = _signal(context, kind)
    f_sig = np.conj(np.fft.fft2(sig))
    f_ind = np.fft.fft2(indicator)
    products = (
        np.fft.fft2(padded) * f_sig,  # conj Σ conj(T')·C_s
        f_ind * f_sig,  # conj Σ_support C_s
        f_ind * np.conj(np.fft.fft2(np.abs(sig) ** 2)),  # Σ_support |C|²_s
    )

    def score(num: np.ndarray, sum1: np.ndarray, sum2: np.ndarray) -> np.ndarray:
        energy = np.real(sum2) - np.abs(sum1) ** 2 / n
        floor = 1e-12 * max(float(np.max(np.real(sum2))), 1e-300)
        return np.abs(num) ** 2 / np.maximum(energy, floor)

    return _peak(score, products, factor, max_shift=search)


def _align(
    reconstruction: np.ndarray,
    ground_truth: np.ndarray,
    mask: np.ndarray | None,
    border: int,
    max_shift: float,
    upsample_factor: int,
) -> _Alignment:
    rec = _as_image("align: reconstruction", reconstruction).astype(np.complex128)
    gt = _as_image("align: ground_truth", ground_truth).astype(np.complex128)
    _same_shape("align", rec, gt)
    if not (np.all(np.isfinite(rec)) and np.all(np.isfinite(gt))):
        raise ValueError("align: reconstruction and ground_truth must be finite")
    if isinstance(border, bool) or not isinstance(border, numbers.Integral) or border < 0:
        raise ValueError(f"border: expected an integer ≥ 0, found {border!r}")
    if not (np.isfinite(max_shift) and max_shift >= 0):
        raise ValueError(f"max_shift: expected a finite value ≥ 0, found {max_shift!r}")
    factor = _check_factor(upsample_factor)
    border = int(border)
    H, W = rec.shape
    if mask is None:
        valid = np.zeros((H, W), dtype=bool)
        valid[border : H - border, border : W - border] = True
    else:
        valid = np.asarray(mask)
        if valid.shape != rec.shape:
            raise ValueError(f"mask: expected shape {rec.shape}, found {valid.shape}")
        valid = valid.astype(bool)
        if border:
            valid = ndimage.binary_erosion(
                valid, structure=np.ones((2 * border + 1,) * 2, bool), border_value=0
            )
    rows, cols = _largest_rectangle(valid)
    if min(rows.stop - rows.start, cols.stop - cols.start) < _MIN_WINDOW:
        raise ValueError(
            f"align: the valid region (mask minus a {border} px border) holds only a "
            f"{rows.stop - rows.start}×{cols.stop - cols.start} px rectangle; at least "
            f"{_MIN_WINDOW}×{_MIN_WINDOW} is needed"
        )
    window = (rows, cols)
    g = gt[window]
    # The context (window grown by ``border``) lies inside the mask: its data is valid.
    ctx = (
        slice(max(rows.start - border, 0), min(rows.stop + border, H)),
        slice(max(cols.start - border, 0), min(cols.stop + border, W)),
    )
    inner = (
        slice(rows.start - ctx[0].start, rows.stop - ctx[0].start),
        slice(cols.start - ctx[1].start, cols.stop - ctx[1].start),
    )
    yy, xx = _unit_coords(rows, cols, window)
    cy, cx = _unit_coords(ctx[0], ctx[1], window)

    margin = min(inner[0].start, inner[1].start, ctx[0].stop - rows.stop, ctx[1].stop - cols.stop)

    def shift_context(
        plane: np.ndarray, shift: tuple[float, float]
    ) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Context without ``plane``, shifted, cropped to the window and to valid pixels."""
        context = rec[ctx] * np.exp(-1j * (plane[0] + plane[1] * cy + plane[2] * cx))
        pad = math.ceil(max(abs(shift[0]), abs(shift[1]))) + 8
        mode = "reflect" if min(context.shape) > pad else "edge"
        moved = fourier_shift(np.pad(context, pad, mode=mode), *shift)[pad:-pad, pad:-pad]
        # Pixels whose shifted value came from beyond the valid context are dropped.
        extra = max(0, math.ceil(max(abs(shift[0]), abs(shift[1]))) - margin)
        if 2 * extra + 7 > min(g.shape):
            raise ValueError(
                f"align: registered shift ({shift[0]:.2f}, {shift[1]:.2f}) px leaves too "
                f"little overlap in the {g.shape} evaluation window"
            )
        trim = (slice(extra, g.shape[0] - extra), slice(extra, g.shape[1] - extra))
        return moved[inner][trim], trim

    # Phase plane (offset + ramp) and shift trade off on smooth objects, so they are
    # estimated alternately: plane on the current alignment, then the shift of the
    # plane-corrected context, until the shift settles (at most 3 rounds).
    plane = _fit_phase_plane(rec[window] * np.conj(g), yy, xx)
    shift = (0.0, 0.0)
    for _ in range(3):
        context = rec[ctx] * np.exp(-1j * (plane[0] + plane[1] * cy + plane[2] * cx))
        new_shift = _register_in_context(g, context, inner, max_shift, factor)
        moved, trim = shift_context(plane, new_shift)
        settled = max(abs(new_shift[0] - shift[0]), abs(new_shift[1] - shift[1])) < 0.5 / factor
        shift = new_shift
        plane = plane + _fit_phase_plane(moved * np.conj(g[trim]), yy[trim[0]], xx[:, trim[1]])
        if settled:
            break
    dy, dx = shift
    shifted, trim = shift_context(plane, shift)
    g, yy, xx = g[trim], yy[trim[0]], xx[:, trim[1]]
    shifted = _remove_phase(shifted, g, yy, xx)
    amp = np.abs(shifted)
    denom = float(np.sum(amp * amp))
    scale = float(np.sum(amp * np.abs(g)) / denom) if denom > 0 else 1.0
    return _Alignment(rec=shifted * scale, gt=g, shift=(dy, dx), scale=scale)


def align(
    reconstruction: np.ndarray,
    ground_truth: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    border: int = 2,
    max_shift: float = 8.0,
    upsample_factor: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Remove the ambiguities of ptychography before comparing with ground truth.

    Returns ``(rec_aligned, gt_cropped)``: complex128 crops of equal shape (see the
    module docstring for the steps). ``mask`` marks valid (covered) pixels; ``border``
    px are eroded from it; shifts up to ``max_shift`` px are searched.
    """
    result = _align(reconstruction, ground_truth, mask, border, max_shift, upsample_factor)
    return result.rec, result.gt


# ----------------------------------------------------------------------------- SSIM / PSNR


def ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean structural similarity, as ``skimage.metrics.structural_similarity`` computes it
    with ``win_size=7`` (uniform window, K1 0.01, K2 0.03, sample covariance, border of 3
    dropped)."""
    x = _as_image("ssim: a", a)
    y = _as_image("ssim: b", b)
    _same_shape("ssim", x, y)
    if np.iscomplexobj(x) or np.iscomplexobj(y):
        raise ValueError("ssim: images must be real (compare amplitude or phase)")
    win = 7
    if min(x.shape) < win:
        raise ValueError(f"ssim: images must be at least {win}×{win}, found {x.shape}")
    if not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range: expected a finite value > 0, found {data_range!r}")
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(v, size=win)

    ux, uy = mean(x), mean(y)
    cov_norm = win * win / (win * win - 1.0)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    p = (win - 1) // 2
    return float(s[p:-p, p:-p].mean(dtype=np.float64))


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """10·log10(R²/MSE); R = max − min of ``reference`` unless given. ``inf`` if identical."""
    ref = _as_image("psnr: reference", reference).astype(np.float64)
    tst = _as_image("psnr: test", test).astype(np.float64)
    _same_shape("psnr", ref, tst)
    R = float(ref.max() - ref.min()) if data_range is None else float(data_range)
    if not (np.isfinite(R) and R > 0):
        raise ValueError(f"data_range: expected a finite value > 0, found {R!r}")
    mse = float(np.mean((ref - tst) ** 2))
    if mse == 0.0:
        return math.inf
    return float(10.0 * np.log10(R * R / mse))


# ----------------------------------------------------------------------------- FRC


def _tukey(n: int, alpha: float) -> np.ndarray:
    """Symmetric Tukey window (as ``scipy.signal.windows.tukey(n, alpha)``, whose module
    costs over half a second to import): cosine edges over a fraction ``alpha``."""
    if n == 1:
        return np.ones(1)
    x = np.arange(n) / (n - 1)
    d = np.minimum(x, 1.0 - x)  # distance to the nearer end, in window lengths
    w = np.ones(n)
    edge = d < alpha / 2
    w[edge] = 0.5 * (1 - np.cos(2 * np.pi * d[edge] / alpha))
    return w


def half_bit_threshold(n_pixels: np.ndarray) -> np.ndarray:
    """Van Heel & Schatz (2005) half-bit threshold for rings of ``n_pixels`` pixels."""
    n = np.maximum(np.asarray(n_pixels, dtype=np.float64), 1.0)
    root = np.sqrt(n)
    return (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root)


def frc(
    a: np.ndarray, b: np.ndarray, taper: float = _FRC_TAPER_PX
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images.

    Both are cropped to a centred L×L square (L = the smaller side) and multiplied by a
    2-D Tukey window whose cosine edges are ``taper`` px wide (at most L/2). Ring r holds
    the frequencies of rounded radius r (in units of 1/L), r = 0 … L//2, and
    FRC(r) = |Σ F_a·conj(F_b)| / sqrt(Σ|F_a|² · Σ|F_b|²) (0 where a ring has no power).
    Returns ``(frequencies in cycles/px, curve, pixels per ring)``.
    """
    x = _as_image("frc: a", a)
    y = _as_image("frc: b", b)
    _same_shape("frc", x, y)
    if not (np.isfinite(taper) and taper >= 0):
        raise ValueError(f"taper: expected a finite value ≥ 0, found {taper!r}")
    L = min(x.shape)
    if L < 4:
        raise ValueError(f"frc: images must be at least 4×4, found {x.shape}")
    r0 = (x.shape[0] - L) // 2
    c0 = (x.shape[1] - L) // 2
    x = x[r0 : r0 + L, c0 : c0 + L]
    y = y[r0 : r0 + L, c0 : c0 + L]
    alpha = min(2.0 * taper / L, 1.0)
    w1 = _tukey(L, alpha)
    window = np.outer(w1, w1)
    fa = np.fft.fftshift(np.fft.fft2(x * window))
    fb = np.fft.fftshift(np.fft.fft2(y * window))
    k = np.arange(L) - L // 2
    radius = np.rint(np.hypot(k[:, None], k[None, :])).astype(np.int64).ravel()
    n_rings = L // 2 + 1
    keep = radius < n_rings
    ring = radius[keep]
    cross = (fa * np.conj(fb)).ravel()[keep]
    num = np.abs(
        np.bincount(ring, cross.real, n_rings) + 1j * np.bincount(ring, cross.imag, n_rings)
    )
    pa = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], n_rings)
    pb = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], n_rings)
    denom = np.sqrt(pa * pb)
    curve = np.divide(num, denom, out=np.zeros(n_rings), where=denom > 0)
    counts = np.bincount(ring, minlength=n_rings)
    return np.arange(n_rings) / L, np.minimum(curve, 1.0), counts


def frc_resolution(
    frequencies: np.ndarray, curve: np.ndarray, threshold: float | np.ndarray
) -> float:
    """Period in pixels (1 / frequency) where ``curve`` first drops below ``threshold``.

    The crossing is interpolated linearly between the last ring at or above the
    threshold and the first below it (scanning from ring 1, the DC ring 0 being the
    start). A curve that never drops below returns the Nyquist period 2.0.
    """
    f = np.asarray(frequencies, dtype=np.float64)
    c = np.asarray(curve, dtype=np.float64)
    if f.ndim != 1 or c.shape != f.shape or f.size < 2:
        raise ValueError(
            f"frc_resolution: frequencies and curve must be 1-D of equal length ≥ 2, "
            f"found {f.shape} and {c.shape}"
        )
    t = np.broadcast_to(np.asarray(threshold, dtype=np.float64), f.shape)
    d = c - t
    below = np.flatnonzero(d[1:] < 0)
    if below.size == 0:
        return NYQUIST_PERIOD
    r = int(below[0]) + 1
    if d[r - 1] < 0:  # already below at DC (a ring without power): report the first ring
        f_cross = f[r]
    else:
        frac = d[r - 1] / (d[r - 1] - d[r])
        f_cross = f[r - 1] + frac * (f[r] - f[r - 1])
    return float(1.0 / f_cross) if f_cross > 0 else float(1.0 / f[1])


# ----------------------------------------------------------------------------- evaluate


def _data_range(values: np.ndarray) -> float:
    """max − min of the ground truth; for a flat one (relative range ≤ 1e-6, e.g. the
    amplitude of a pure phase object) max|value|, and 1.0 if that is 0 too."""
    top = float(np.abs(values).max())
    spread = float(values.max() - values.min())
    if spread > 1e-6 * top:
        return spread
    return top if top > 0 else 1.0


def evaluate(
    reconstruction: np.ndarray,
    ground_truth: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    border: int = 2,
    max_shift: float = 8.0,
) -> dict[str, float]:
    """Align ``reconstruction`` to ``ground_truth`` (complex (H, W), same frame) and score it.

    Keys: ``amplitude_ssim``, ``phase_ssim`` (radians, data range the GT phase range),
    ``phase_ssim_upstream`` (phase mapped to [0, 1], data range 1), ``amplitude_psnr``,
    ``phase_psnr`` (dB), ``amplitude_mae``, ``phase_mae`` (rad, wrapped),
    ``frc_half_bit``, ``frc_1_7`` (resolution as period in px), ``shift_px``
    (|registered shift|), ``shift_dy``, ``shift_dx`` (the shift applied to the
    reconstruction: its content sat at (−dy, −dx) px from the ground truth's),
    ``amplitude_scale`` (factor applied to the reconstruction), ``n_pixels`` (compared
    pixels). All values are finite floats.
    ``mask`` marks the valid pixels, typically ``Stitched.covered`` of a stitch made
    with ``shape=ground_truth.shape``.
    """
    al = _align(reconstruction, ground_truth, mask, border, max_shift, 50)
    rec, gt = al.rec, al.gt
    amp_r, amp_g = np.abs(rec), np.abs(gt)
    phi_g = np.angle(gt)
    phi_r = phi_g + np.angle(rec * np.conj(gt))  # rec phase unwrapped around gt's
    R_amp = _data_range(amp_g)
    R_phi = _data_range(phi_g)
    L = min(gt.shape)
    freqs, curve, counts = frc(rec, gt, taper=min(_FRC_TAPER_PX, L // 4))
    return {
        "amplitude_ssim": ssim(amp_r, amp_g, R_amp),
        "phase_ssim": ssim(phi_r, phi_g, R_phi),
        "phase_ssim_upstream": ssim(
            (phi_r + np.pi) / (2 * np.pi), (phi_g + np.pi) / (2 * np.pi), 1.0
        ),
        "amplitude_psnr": min(psnr(amp_g, amp_r, R_amp), PSNR_CAP_DB),
        "phase_psnr": min(psnr(phi_g, phi_r, R_phi), PSNR_CAP_DB),
        "amplitude_mae": float(np.mean(np.abs(amp_r - amp_g))),
        "phase_mae": float(np.mean(np.abs(phi_r - phi_g))),
        "frc_half_bit": frc_resolution(freqs, curve, half_bit_threshold(counts)),
        "frc_1_7": frc_resolution(freqs, curve, FRC_ONE_SEVENTH),
        "shift_px": float(math.hypot(*al.shift)),
        "shift_dy": al.shift[0],
        "shift_dx": al.shift[1],
        "amplitude_scale": al.scale,
        "n_pixels": float(gt.size),
    }

"""Pixel geometry shared by simulation, grouping and stitching.

One convention everywhere (specs/data-contract.md): a position (x, y) is the probe
centre in object pixels, x = column, y = row, and the N×N patch seen at (x, y) has
``patch[i, j] = object(y + i − N/2, x + j − N/2)``; object pixel (y, x) therefore lands
at patch pixel (N/2, N/2), the zero-frequency pixel of the centred FFT. Sub-pixel
positions are interpolated bilinearly; outside the object the value is zero.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

__all__ = ["extract_patches", "extract_patches_spline", "translate"]


def _bilinear_gather(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``image`` at the outer product of per-item row and column coordinates.

    ``rows`` is (n, h) and ``cols`` (n, w); the result is (n, h, w). Every row of
    ``rows`` (and of ``cols``) shares one fractional part, so the sample is a weighted
    sum of four integer-shifted crops of a zero-padded copy.
    """
    h_img, w_img = image.shape
    pad = 1
    padded = np.zeros((h_img + 2 * pad, w_img + 2 * pad), dtype=image.dtype)
    padded[pad:-pad, pad:-pad] = image
    r0 = np.floor(rows).astype(np.int64)
    c0 = np.floor(cols).astype(np.int64)
    fr = (rows - r0)[:, :, None]
    fc = (cols - c0)[:, None, :]

    def take(dr: int, dc: int) -> np.ndarray:
        r = np.clip(r0 + dr + pad, 0, h_img + 2 * pad - 1)
        c = np.clip(c0 + dc + pad, 0, w_img + 2 * pad - 1)
        inside_r = (r0 + dr >= 0) & (r0 + dr < h_img)
        inside_c = (c0 + dc >= 0) & (c0 + dc < w_img)
        values = padded[r[:, :, None], c[:, None, :]]
        return values * (inside_r[:, :, None] & inside_c[:, None, :])

    out = (
        take(0, 0) * ((1 - fr) * (1 - fc))
        + take(0, 1) * ((1 - fr) * fc)
        + take(1, 0) * (fr * (1 - fc))
        + take(1, 1) * (fr * fc)
    )
    return out.astype(np.result_type(image.dtype, np.float32), copy=False)


def extract_patches(image: np.ndarray, x: np.ndarray, y: np.ndarray, N: int) -> np.ndarray:
    """The (n, N, N) patches of a 2-D ``image`` seen at positions ``(x[k], y[k])``.

    ``patch[k, i, j] = image(y[k] + i − N/2, x[k] + j − N/2)``, bilinear, zero outside.
    The result has the image's dtype promoted to at least float32/complex64.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"extract_patches: expected a 2-D image, found shape {image.shape}")
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"extract_patches: x and y must be 1-D of equal length, found {x.shape}, {y.shape}"
        )
    offsets = np.arange(N, dtype=np.float64) - N / 2
    return _bilinear_gather(image, y[:, None] + offsets, x[:, None] + offsets)


def extract_patches_spline(image: np.ndarray, x: np.ndarray, y: np.ndarray, N: int) -> np.ndarray:
    """As :func:`extract_patches`, interpolated with cubic B-splines: complex64 (n, N, N).

    What an iterative solver's object is read with at sub-pixel positions: a spline
    neither blurs like bilinear interpolation nor rings like a Fourier shift of a
    non-periodic window. Outside the image the value is zero.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"extract_patches_spline: expected a 2-D image, found {image.shape}")
    offsets = np.arange(N, dtype=np.float64) - N / 2
    rows = np.asarray(y, dtype=np.float64).reshape(-1)[:, None] + offsets[None, :]
    cols = np.asarray(x, dtype=np.float64).reshape(-1)[:, None] + offsets[None, :]
    b = rows.shape[0]
    coordinates = np.stack(
        [
            np.broadcast_to(rows[:, :, None], (b, N, N)),
            np.broadcast_to(cols[:, None, :], (b, N, N)),
        ]
    )
    out = np.empty((b, N, N), dtype=np.complex64)
    for part, target in ((image.real, out.real), (image.imag, out.imag)):
        coefficients = scipy.ndimage.spline_filter(part.astype(np.float64), order=3, mode="mirror")
        target[...] = scipy.ndimage.map_coordinates(
            coefficients, coordinates, order=3, mode="mirror", prefilter=False
        )
    inside = (
        (rows[:, :, None] >= -0.5)
        & (rows[:, :, None] <= image.shape[0] - 0.5)
        & (cols[:, None, :] >= -0.5)
        & (cols[:, None, :] <= image.shape[1] - 0.5)
    )
    out[~inside] = 0
    return out


def translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """Move the content of a 2-D image by ``dx`` columns and ``dy`` rows (bilinear, zero fill).

    ``out(r, c) = image(r − dy, c − dx)``: a delta at (r0, c0) ends at (r0 + dy, c0 + dx).
    This is the numpy reference the backends' translation layers must match.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"translate: expected a 2-D image, found shape {image.shape}")
    h, w = image.shape
    rows = (np.arange(h, dtype=np.float64) - dy)[None, :]
    cols = (np.arange(w, dtype=np.float64) - dx)[None, :]
    return _bilinear_gather(image, rows, cols)[0]

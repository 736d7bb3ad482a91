"""The numerical core of ptycho-epie: vectorised minibatch rPIE in numpy/scipy.

Model, in ptycho's conventions (specs/backend-protocol.md §3.3): pattern k, seen at
position (x_k, y_k) in object pixels, is

    M_k = N · X_n,k ≈ |fft2(Q_k · O[window_k])|,   Q_k = Q shifted by the sub-pixel part,

where ``O`` is the object on an integer canvas aligned with the object's pixel grid,
``window_k`` the N × N window whose pixel (N/2, N/2) is the integer part of the
position and ``Q = g · P`` the probe at the scale of the normalised data. A sub-pixel
offset f of the object relative to the probe is the same as the probe moved by −f in
the frame of the window, up to a phase ramp in the far field that the modulus does not
see, so every pattern uses the integer window and a Fourier-shifted probe.

One iteration visits every pattern once, in minibatches in a seeded random order. In a
minibatch all patterns are projected onto their measured modulus in parallel (one
batched FFT pair) and the object and probe receive the regularised PIE (rPIE, Maiden,
Johnson & Li 2017) update, summed over the batch:

    O += Σ conj(Q_k) Δψ_k / ((1 − α)·Σ|Q_k|² + α·max Σ|Q_k|²)
    P += β · Σ S_{−f_k}(conj(O_k) Δψ_k) / ((1 − α)·Σ|O_k|² + α·max Σ|O_k|²)

The sums over the batch are scattered with ``np.bincount`` on flat canvas indices;
there is no Python loop over patterns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = [
    "Losses",
    "Scan",
    "amplitude_scale",
    "batch_order",
    "flat_object",
    "illumination",
    "iterate",
    "make_scan",
    "measure",
    "rpie",
    "shift_images",
]

_EPS = 1e-12
_TINY = 1e-30
_NLL_EPS = 1e-12
_TINY = 1e-30
_MARGIN = 2  # canvas pixels kept around the outermost windows


@dataclass(frozen=True, eq=False, kw_only=True)
class Scan:
    """Where each pattern's window lies on the reconstruction canvas."""

    N: int
    """Pattern size."""
    rows: np.ndarray
    """(n,) int64: canvas row of each window's first row."""
    cols: np.ndarray
    """(n,) int64: canvas column of each window's first column."""
    frac: np.ndarray
    """(n, 2) float64: sub-pixel offset (fy, fx) ∈ [−½, ½] of each position."""
    shape: tuple[int, int]
    """(H, W) of the canvas."""
    origin: tuple[int, int]
    """Object pixel (row, col) of canvas pixel (0, 0)."""

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    def flat_indices(self, index: np.ndarray) -> np.ndarray:
        """(b, N, N) flat canvas indices of the windows of patterns ``index``."""
        width = self.shape[1]
        base = self.rows[index] * width + self.cols[index]
        grid = np.arange(self.N, dtype=np.int64)
        offsets = grid[:, None] * width + grid[None, :]
        return base[:, None, None] + offsets[None, :, :]


def make_scan(x: np.ndarray, y: np.ndarray, N: int) -> Scan:
    """The canvas and windows for patterns at ``(x, y)`` (object pixels, probe centres).

    Pattern k sees ``object(y_k + i − N/2, x_k + j − N/2)``; its window starts at the
    nearest integer to ``y_k − N/2`` (rows) and ``x_k − N/2`` (columns).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    start_y = y - N / 2
    start_x = x - N / 2
    iy = np.rint(start_y).astype(np.int64)
    ix = np.rint(start_x).astype(np.int64)
    row0 = int(iy.min()) - _MARGIN
    col0 = int(ix.min()) - _MARGIN
    height = int(iy.max()) - row0 + N + _MARGIN
    width = int(ix.max()) - col0 + N + _MARGIN
    return Scan(
        N=N,
        rows=iy - row0,
        cols=ix - col0,
        frac=np.stack([start_y - iy, start_x - ix], axis=1),
        shape=(height, width),
        origin=(row0, col0),
    )


def _ramps(frac: np.ndarray, N: int) -> np.ndarray:
    """(b, N, N) complex64 Fourier factors that move image content by +frac (rows, cols)."""
    k = scipy.fft.fftfreq(N)
    ry = np.exp(-2j * np.pi * frac[:, 0, None] * k[None, :]).astype(np.complex64)
    rx = np.exp(-2j * np.pi * frac[:, 1, None] * k[None, :]).astype(np.complex64)
    return ry[:, :, None] * rx[:, None, :]


def shift_images(image: np.ndarray, frac: np.ndarray, workers: int) -> np.ndarray:
    """(b, N, N) copies of the (N, N) ``image`` with content moved by ``frac`` (periodic)."""
    spectrum = scipy.fft.fft2(image.astype(np.complex64), workers=workers)
    shifted = spectrum[None, :, :] * _ramps(frac, image.shape[-1])
    return scipy.fft.ifft2(shifted, workers=workers, overwrite_x=True)


def flat_object(scan: Scan, probe: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """A constant real object whose mean intensity matches the data (the starting guess).

    Parseval: Σ|fft2(c·Q)|² = N²·c²·Σ|Q|², so c = sqrt(mean Σ M² / (N² Σ|Q|²)).
    """
    energy = float(np.mean(np.sum(np.square(measured, dtype=np.float64), axis=(1, 2))))
    probe_energy = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    level = np.sqrt(energy / (scan.N**2 * max(probe_energy, _EPS)))
    return np.full(scan.shape, level, dtype=np.complex64)


def illumination(scan: Scan, probe: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(H, W) float64 canvas of Σ|P|² over the windows of patterns ``index``."""
    flat = scan.flat_indices(index)
    weights = np.broadcast_to(np.abs(probe) ** 2, flat.shape)
    summed = np.bincount(
        flat.ravel(), weights=weights.ravel(), minlength=scan.shape[0] * scan.shape[1]
    )
    return summed.reshape(scan.shape)


def amplitude_scale(
    obj: np.ndarray,
    probe: np.ndarray,
    scan: Scan,
    measured: np.ndarray,
    index: np.ndarray,
    workers: int,
    batch_size: int = 256,
) -> float:
    """The real a ≥ 0 minimising Σ(a·|fft2(Q_k·O_k)| − M_k)² over patterns ``index``.

    Closed form a = Σ A·M / Σ A²: the scale that puts an object of arbitrary amplitude
    scale on the data's (a complex scalar's phase is invisible in the amplitudes).
    """
    cross = 0.0
    power = 0.0
    for start in range(0, index.shape[0], batch_size):
        part = index[start : start + batch_size]
        window = obj.ravel()[scan.flat_indices(part)]
        psi = shift_images(probe, scan.frac[part], workers) * window
        amplitude = np.abs(scipy.fft.fft2(psi, workers=workers, overwrite_x=True))
        cross += float(np.sum(amplitude * measured[part], dtype=np.float64))
        power += float(np.sum(np.square(amplitude), dtype=np.float64))
    return cross / power if power > _TINY else 0.0


def batch_order(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded random permutation of the patterns cut into minibatches."""
    order = rng.permutation(n)
    return [np.sort(order[i : i + batch_size]) for i in range(0, n, batch_size)]


@dataclass(frozen=True, kw_only=True)
class Losses:
    """Misfit of one iteration, accumulated over its minibatches before each update."""

    fourier_error: float
    """Σ(|Ψ| − M)² / Σ M²: relative squared amplitude misfit."""
    poisson_nll: float
    """mean(λ − k·log(λ + 1e-12)), λ = (s₀|Ψ|/N)², k = (s₀ M/N)² (the PtychoPINN loss)."""
    mae: float
    """mean |s₀|Ψ|/N − s₀M/N| (PtychoPINN's amplitude MAE)."""


class _LossSums:
    def __init__(self) -> None:
        self.residual = 0.0
        self.energy = 0.0
        self.nll = 0.0
        self.mae = 0.0
        self.count = 0

    def add(self, amplitude: np.ndarray, measured: np.ndarray, s: float) -> None:
        # elementwise in float32 (the cost of a log per pixel matters), sums in float64
        diff = amplitude - measured
        self.residual += float(np.sum(np.square(diff), dtype=np.float64))
        self.energy += float(np.sum(np.square(measured), dtype=np.float64))
        s32 = np.float32(s)
        rate = np.square(s32 * amplitude)
        counts = np.square(s32 * measured)
        nll = rate - counts * np.log(rate + np.float32(_NLL_EPS))
        self.nll += float(np.sum(nll, dtype=np.float64))
        self.mae += float(s) * float(np.sum(np.abs(diff), dtype=np.float64))
        self.count += amplitude.size

    def result(self) -> Losses:
        return Losses(
            fourier_error=self.residual / max(self.energy, _EPS),
            poisson_nll=self.nll / max(self.count, 1),
            mae=self.mae / max(self.count, 1),
        )


def _scatter(flat: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(flat.ravel(), weights=values.ravel(), minlength=size)


def iterate(
    obj: np.ndarray,
    probe: np.ndarray,
    scan: Scan,
    measured: np.ndarray,
    batches: list[np.ndarray],
    *,
    alpha: float,
    beta: float,
    update_probe: bool,
    scale: float,
    workers: int,
    shifted_probes: np.ndarray | None = None,
    measure: bool = True,
) -> tuple[np.ndarray, np.ndarray, Losses | None]:
    """One rPIE iteration over ``batches``; returns the new object, probe and losses.

    ``measured`` is (n, N, N) float32 ``N·X_n`` in FFT order (zero frequency at [0, 0]).
    ``shifted_probes`` (n, N, N), when given, are the probe's sub-pixel copies (valid
    only while the probe is not updated). ``scale`` is s₀/N, used for the reported
    Poisson NLL and MAE only. Inputs are not modified.
    """
    obj = obj.copy()
    probe = probe.astype(np.complex64, copy=True)
    size = obj.size
    sums = _LossSums() if measure else None
    for index in batches:
        flat = scan.flat_indices(index)
        window = obj.ravel()[flat]
        frac = scan.frac[index]
        if shifted_probes is not None and not update_probe:
            probes = shifted_probes[index]
        else:
            probes = shift_images(probe, frac, workers)
        psi = probes * window
        spectrum = scipy.fft.fft2(psi, workers=workers)
        amplitude = np.abs(spectrum)
        target = measured[index]
        if sums is not None:
            sums.add(amplitude, target, scale)
        spectrum *= target / (amplitude + np.float32(_EPS))
        delta = scipy.fft.ifft2(spectrum, workers=workers, overwrite_x=True)
        delta -= psi

        weighted = np.conj(probes) * delta
        power = np.square(probes.real) + np.square(probes.imag)
        illumination = _scatter(flat, power, size)
        numerator = _scatter(flat, weighted.real, size) + 1j * _scatter(flat, weighted.imag, size)
        denominator = (1.0 - alpha) * illumination + alpha * illumination.max()
        # uncovered pixels have a zero numerator: the floor only avoids 0/0
        step = numerator / np.maximum(denominator, _TINY)

        if update_probe:
            gradient = np.conj(window) * delta
            spectrum_g = scipy.fft.fft2(gradient, workers=workers, overwrite_x=True)
            spectrum_g *= np.conj(_ramps(frac, scan.N))
            probe_num = scipy.fft.ifft2(spectrum_g.sum(axis=0), workers=workers)
            probe_den = np.sum(np.abs(window) ** 2, axis=0, dtype=np.float64)
            probe_den = (1.0 - alpha) * probe_den + alpha * probe_den.max()
            probe = probe + (beta * probe_num / np.maximum(probe_den, _EPS)).astype(np.complex64)
        obj.ravel()[:] += step
    return obj, probe, None if sums is None else sums.result()


def rpie(
    obj: np.ndarray,
    probe: np.ndarray,
    scan: Scan,
    measured: np.ndarray,
    index: np.ndarray,
    *,
    iterations: int,
    batch_size: int,
    rng: np.random.Generator,
    alpha: float,
    momentum: float,
    beta: float = 1.0,
    refine_probe_from: int | None = None,
    scale: float = 1.0,
    workers: int = -1,
    shifted_probes: np.ndarray | None = None,
    measure: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, Losses | None]]:
    """Run rPIE iterations on patterns ``index``; yield (object, probe, losses) after each.

    The object moves with heavy-ball momentum across iterations (as in mPIE, Maiden,
    Johnson & Li 2017): ``v ← momentum·v + (O_rPIE − O)``, ``O ← O + v``. The probe is
    updated from iteration ``refine_probe_from`` on (never when None).
    """
    velocity = np.zeros_like(obj)
    for iteration in range(iterations):
        update_probe = refine_probe_from is not None and iteration >= refine_probe_from
        batches = [index[b] for b in batch_order(index.shape[0], batch_size, rng)]
        new, probe, losses = iterate(
            obj,
            probe,
            scan,
            measured,
            batches,
            alpha=alpha,
            beta=beta,
            update_probe=update_probe,
            scale=scale,
            workers=workers,
            shifted_probes=None if update_probe else shifted_probes,
            measure=measure,
        )
        if momentum > 0:
            velocity *= np.float32(momentum)
            velocity += new - obj
            obj = obj + velocity
        else:
            obj = new
        yield obj, probe, losses


def measure(
    obj: np.ndarray,
    probe: np.ndarray,
    scan: Scan,
    measured: np.ndarray,
    index: np.ndarray,
    scale: float,
    workers: int,
    batch_size: int = 256,
) -> Losses:
    """The misfit of patterns ``index`` for the current object and probe (no update)."""
    sums = _LossSums()
    for start in range(0, index.shape[0], batch_size):
        part = index[start : start + batch_size]
        window = obj.ravel()[scan.flat_indices(part)]
        psi = shift_images(probe, scan.frac[part], workers) * window
        amplitude = np.abs(scipy.fft.fft2(psi, workers=workers, overwrite_x=True))
        sums.add(amplitude, measured[part], scale)
    return sums.result()

"""The numpy reference of the far-field forward model (specs/data-contract.md §4).

Simulation uses it to make data and the backends' tests compare their framework
versions against it, so every convention lives here once:

- probe normalisation ``P̃ = P / (probe_scale · mean(|mask · P|))`` with the disk mask
  r < N//4 centred at ((N−1)/2, (N−1)/2), mean over all N×N pixels;
- diffraction amplitude ``A = sqrt(fftshift(|fft2(O · P̃)|²) / N²) = fftshift(|fft2(O · P̃)|) / N``
  (unnormalised forward FFT), so zero frequency sits at pixel (N/2, N/2) and Parseval gives
  ``Σ A² = Σ |O · P̃|²``;
- the Poisson negative log-likelihood ``mean(λ − k·log(λ + 1e-12))`` (constant term dropped).

It also holds the numbers both framework backends derive for their differentiable
physics (specs/model.md §4, §5): the merge and log epsilons, the canvas offset, the centre
and border masks and the 3×3 smoothing kernel. They need no framework, so each backend
turns them into its own tensors instead of deriving them again.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
from scipy.ndimage import gaussian_filter

__all__ = [
    "BACKEND_PHYSICS",
    "MERGE_EPSILON",
    "NLL_EPSILON",
    "border_mask",
    "canvas_padding",
    "center_mask_1d",
    "default_probe",
    "diffraction_amplitude",
    "focused_probe",
    "initial_output_gain",
    "normalize_probe",
    "poisson_nll",
    "probe_disk_mask",
    "smoothing_kernel",
]

BACKEND_PHYSICS: tuple[str, ...] = (
    "MERGE_EPSILON",
    "NLL_EPSILON",
    "border_mask",
    "canvas_padding",
    "center_mask_1d",
    "diffract",
    "effective_probe",
    "extract_patches",
    "gaussian_smooth",
    "mae_loss",
    "merge_patches",
    "pad_to_canvas",
    "poisson_deviance",
    "poisson_nll",
    "shift_matrices",
    "supervised_loss",
    "translate",
    "trim_canvas",
)
"""The names each framework backend's ``physics`` module provides: its differentiable
twins of the model's physics (specs/model.md §4, §5, §7), and the constants and helpers of
this module it uses. Listed once so the two twins keep one interface; the cross-backend
tests check both against it."""

MERGE_EPSILON = 0.001
"""Added to the overlap count of the merge canvas (upstream TF value)."""
NLL_EPSILON = 1e-12
"""Added to the Poisson rate inside the logarithm."""
OBJECT_LEVEL = 0.5
"""Object amplitude at which a fresh network's prediction matches the data's mean intensity."""
# Upstream's default_probe_scale: the Gaussian window's std is N / (0.7·π²).
_DEFAULT_PROBE_SCALE = 0.7


def _check_size(N: int, name: str) -> int:
    if isinstance(N, bool) or not isinstance(N, int | np.integer) or N < 2 or N % 2:
        raise ValueError(f"{name}: expected an even integer N >= 2, found {N!r}")
    return int(N)


def probe_disk_mask(N: int) -> np.ndarray:
    """The (N, N) bool disk r < N//4 around ((N−1)/2, (N−1)/2) used to normalise probes."""
    N = _check_size(N, "probe_disk_mask")
    centre = (N - 1) / 2
    offsets = np.arange(N, dtype=np.float64) - centre
    radius = np.hypot(offsets[:, None], offsets[None, :])
    return radius < N // 4


def canvas_padding(N: int, P: int) -> int:
    """Offset of an N×N patch inside the P×P canvas (the same for padding and trimming)."""
    if P < N:
        raise ValueError(f"canvas size P={P} is smaller than the patch size N={N}")
    return (P - N) // 2


def center_mask_1d(N: int) -> np.ndarray:
    """Indicator (N,) float32 of the central N/2 pixels [N/4, 3N/4): the 2-D mask is its outer product."""
    mask = np.zeros(N, dtype=np.float32)
    mask[N // 4 : N // 4 + N // 2] = 1.0
    return mask


def border_mask(N: int) -> np.ndarray:
    """(N, N) float32 ones outside the central N/2 × N/2 box, zeros inside (the path-2 mask)."""
    inner = center_mask_1d(N)
    return (1.0 - inner[:, None] * inner[None, :]).astype(np.float32)


def smoothing_kernel(sigma: float) -> np.ndarray:
    """The (3, 3) float64 Gaussian kernel of standard deviation ``sigma`` > 0, summing to 1.

    What both backends' ``gaussian_smooth`` convolve the probe's parts with.
    """
    taps = np.array([-1.0, 0.0, 1.0])
    g = np.exp(-(taps**2) / (2.0 * sigma**2))
    return (g[:, None] * g[None, :]) / (g.sum() ** 2)


def _square_probe(probe: np.ndarray, caller: str) -> np.ndarray:
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(f"{caller}: expected a square (N, N) probe, found shape {probe.shape}")
    return probe


def normalize_probe(probe: np.ndarray, probe_scale: float) -> np.ndarray:
    """``P / (probe_scale · mean(|mask · P|))`` as complex64: the probe every backend uses.

    Normalising once, in the core, keeps the two frameworks on the same probe level
    (upstream torch divided by ``probe_scale`` a second time inside its forward pass).
    """
    probe = _square_probe(probe, "normalize_probe")
    if not (np.isfinite(probe_scale) and probe_scale > 0):
        raise ValueError(f"normalize_probe: expected probe_scale > 0, found {probe_scale!r}")
    mask = probe_disk_mask(probe.shape[0])
    level = float(np.mean(np.abs(probe.astype(np.complex128)) * mask))
    if not (np.isfinite(level) and level > 0):
        raise ValueError(
            "normalize_probe: expected a probe with finite, non-zero magnitude inside the "
            f"disk r < N//4, found mean |mask·P| = {level!r}"
        )
    return (probe.astype(np.complex128) / (probe_scale * level)).astype(np.complex64)


def initial_output_gain(probe: np.ndarray, *, object_level: float = OBJECT_LEVEL) -> float:
    """Output gain g₀ at which an object of uniform amplitude ``object_level`` reproduces
    the normalised data: ``g₀ = (N/2) / (object_level · sqrt(Σ|P̃|²))``.

    Normalised patterns carry a mean total intensity of (N/2)² and, by Parseval, an object
    O under the probe P̃ diffracts Σ|O·P̃|² into its pattern. Starting the output gain at g₀
    puts the network's amplitude activation mid-range (a sigmoid's 0.5) at the data's level,
    instead of asking the network to reach whatever level ``probe_scale`` happens to imply
    (for a structured probe that can lie beyond a sigmoid's ceiling of 1).
    """
    probe = _square_probe(probe, "initial_output_gain")
    if not (np.isfinite(object_level) and object_level > 0):
        raise ValueError(f"initial_output_gain: expected object_level > 0, found {object_level!r}")
    power = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    if not (np.isfinite(power) and power > 0):
        raise ValueError(
            f"initial_output_gain: expected a probe with finite, non-zero power, found {power!r}"
        )
    return float(probe.shape[0] / 2 / (object_level * np.sqrt(power)))


def diffraction_amplitude(patches: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Far-field amplitude ``fftshift(|fft2(patches · probe)|) / N`` over the last two axes.

    ``patches`` is (..., N, N) complex, ``probe`` (N, N). Single precision is used when
    both inputs are single precision (float32 FFTs are accurate to ~1e-6 of the peak,
    far below Poisson noise); the result is float32 then, float64 otherwise.
    """
    patches = np.asarray(patches)
    probe = np.asarray(probe)
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise ValueError(
            f"diffraction_amplitude: expected a square (N, N) probe, found shape {probe.shape}"
        )
    if patches.ndim < 2 or patches.shape[-2:] != probe.shape:
        raise ValueError(
            f"diffraction_amplitude: expected patches of shape (..., {probe.shape[0]}, "
            f"{probe.shape[1]}), found {patches.shape}"
        )
    dtype = np.result_type(patches.dtype, probe.dtype, np.complex64)
    if dtype not in (np.complex64, np.complex128):
        dtype = np.dtype(np.complex128)
    exit_wave = patches.astype(dtype, copy=False) * probe.astype(dtype, copy=False)
    spectrum = scipy.fft.fft2(exit_wave, axes=(-2, -1), workers=-1, overwrite_x=True)
    amplitude = np.abs(spectrum)
    amplitude /= probe.shape[0]
    return scipy.fft.fftshift(amplitude, axes=(-2, -1))


def poisson_nll(rate: np.ndarray, counts: np.ndarray) -> float:
    """Mean Poisson negative log-likelihood ``mean(λ − k·log(λ + 1e-12))`` in float64.

    The ``log k!`` term is dropped (it does not depend on the model), as upstream's
    training loss does, so values can be negative.
    """
    rate = np.asarray(rate, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if rate.shape != counts.shape:
        raise ValueError(
            f"poisson_nll: expected rate and counts of equal shape, found {rate.shape} and "
            f"{counts.shape}"
        )
    if rate.size == 0:
        raise ValueError("poisson_nll: expected non-empty arrays, found size 0")
    return float(np.mean(rate - counts * np.log(rate + NLL_EPSILON)))


def default_probe(N: int) -> np.ndarray:
    """Upstream PtychoPINN's default probe: a soft-edged real disk of radius ≈ 0.170·N.

    The outer product of a max-normalised Gaussian window (length N, std N/(0.7·π²),
    centred at (N−1)/2) is thresholded at 0.5, blurred with a Gaussian of σ 1 px and
    offset by 1e-9 so that no pixel is exactly zero. Returned as complex64.
    """
    N = _check_size(N, "default_probe")
    std = N / (_DEFAULT_PROBE_SCALE * np.pi**2)
    offsets = np.arange(N, dtype=np.float64) - (N - 1) / 2
    window = np.exp(-0.5 * (offsets / std) ** 2)
    window /= window.max()
    disk = (np.outer(window, window) > 0.5).astype(np.float64)
    return (gaussian_filter(disk, 1.0) + 1e-9).astype(np.complex64)


def focused_probe(
    N: int,
    *,
    pupil_radius: float | None = None,
    defocus: float | None = None,
    central_stop: float = 0.0,
    edge_width: float = 1.0,
) -> np.ndarray:
    """A structured complex probe: a defocused circular pupil seen at the sample plane.

    A circular pupil of radius ``pupil_radius`` frequency pixels (default N/8), optionally
    with a central stop (fraction of that radius), carries a quadratic defocus phase of
    ``defocus`` radians at its edge (default 0.2·π·pupil_radius). Its inverse FFT is the
    probe: a main lobe about N/3 across (|P| > max/2; ~95 % of the power inside r < N/4)
    with a central dip, weak rings and a curved phase, like a slightly defocused zone-plate
    or KB focus. The pupil edge is softened over ``edge_width`` frequency pixels (tanh) so
    the probe's tails, which the periodic FFT would wrap around, stay below ~3 % of the
    peak amplitude at the border. Centred at ((N−1)/2, (N−1)/2) like :func:`default_probe`
    and scaled to max |P| = 1. Deterministic.

    The geometric spot diameter is ``2·defocus·N / (π·pupil_radius)`` pixels, so the
    default spot is 0.4·N wide for any N.
    """
    N = _check_size(N, "focused_probe")
    radius = N / 8 if pupil_radius is None else float(pupil_radius)
    if not (np.isfinite(radius) and 1.0 <= radius <= N / 2):
        raise ValueError(
            f"focused_probe: expected 1 <= pupil_radius <= N/2, found {pupil_radius!r}"
        )
    phase_edge = 0.2 * np.pi * radius if defocus is None else float(defocus)
    if not np.isfinite(phase_edge):
        raise ValueError(f"focused_probe: expected a finite defocus, found {defocus!r}")
    if not (0.0 <= central_stop < 1.0):
        raise ValueError(f"focused_probe: expected 0 <= central_stop < 1, found {central_stop!r}")
    if not (np.isfinite(edge_width) and edge_width > 0):
        raise ValueError(f"focused_probe: expected edge_width > 0, found {edge_width!r}")
    freq = scipy.fft.fftfreq(N, d=1.0 / N)  # integer frequency pixels, zero at index 0
    k = np.hypot(freq[:, None], freq[None, :])
    pupil = 0.5 * (1.0 - np.tanh((k - radius) / edge_width))
    if central_stop > 0:
        pupil *= 0.5 * (1.0 + np.tanh((k - central_stop * radius) / edge_width))
    pupil = pupil * np.exp(1j * phase_edge * (k / radius) ** 2)
    # Linear phase that moves the probe centre from pixel 0 to (N−1)/2 after the fftshift
    # below (which adds N/2): a shift of −1/2 pixel along both axes.
    ramp = np.exp(1j * np.pi * (freq[:, None] + freq[None, :]) / N)
    field = scipy.fft.fftshift(scipy.fft.ifft2(pupil * ramp))
    field /= np.abs(field).max()
    return field.astype(np.complex64)

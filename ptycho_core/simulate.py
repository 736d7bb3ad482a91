"""Deterministic synthetic ptychography data (specs/data-contract.md §7).

One seeded :class:`numpy.random.Generator` per concern (object, scan jitter, noise, all
spawned from ``SimulationConfig.seed``), so the same config always gives the same dataset
and, for a fixed object size, changing the jitter or the dose does not redraw the object.

Pipeline of :func:`simulate`:

1. object: a complex (H, W) image — 'lines' (upstream PtychoPINN's benchmark) or 'blobs'
   (smoothed Gaussian noise); amplitude in [amplitude_min, amplitude_max], phase from the
   upstream tanh formula;
2. probe: 'focused' (a defocused pupil with rings and curved phase) or 'default' (the
   upstream soft disk), both from :mod:`ptycho_core.physics`;
3. scan: 'fermat' spiral or 'raster', centred on the object, sub-pixel, optional Gaussian
   jitter, every N×N patch inside the object;
4. forward: patches by :func:`ptycho_core.geometry.extract_patches` (bilinear, so sub-pixel
   positions are not the model's exact discretisation), intensity
   ``physics.diffraction_amplitude(patches, probe)²`` scaled so the mean total rate per
   pattern is ``nphotons``, Poisson counts sampled in float64;
5. output: **raw amplitudes** ``sqrt(counts)`` as float32 (the data contract accepts any
   amplitude scale; the mean of Σ diffraction² per pattern is ≈ nphotons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.fft

from ptycho_core import physics
from ptycho_core.config import (
    _ConfigMixin,
    _doc,
    _int_at_least,
    _int_in,
    _one_of,
    _positive_real,
    _real_in,
)
from ptycho_core.data import PtychoData, validate
from ptycho_core.errors import ConfigError
from ptycho_core.geometry import extract_patches
from ptycho_core.limits import MAX_ARRAY_BYTES, MAX_CANVAS_PIXELS

__all__ = [
    "MAX_OBJECTS",
    "OBJECT_KINDS",
    "PHASE_KINDS",
    "PROBE_KINDS",
    "SCAN_KINDS",
    "SimulationConfig",
    "default_dataset",
    "default_simulation_config",
    "make_object",
    "make_probe",
    "scan_positions",
    "simulate",
]

OBJECT_KINDS: tuple[str, ...] = ("lines", "blobs")
PHASE_KINDS: tuple[str, ...] = ("tanh", "independent", "none")
PROBE_KINDS: tuple[str, ...] = ("focused", "default")
SCAN_KINDS: tuple[str, ...] = ("fermat", "raster")
SPLITS: tuple[str, ...] = ("train", "test")

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
# Golden-angle Fermat spiral r_k = c·√(k + 1/2): its nearest-neighbour distance is 1.69·c
# (median; 1.55–1.76·c for every point and any n, measured), so c = step / 1.69 makes the
# typical neighbour distance equal to ``step``. The 1/2 keeps the first points apart.
_FERMAT_SPACING = 1.69
# Upstream draws 400 lines on a canvas twice its usual 392-px object; the ink density of
# random full-canvas segments scales as (number of lines) / (canvas side), so keeping
# 400·size/392 lines gives every object size the upstream look.
_LINES_PER_PIXEL = 400 / 392
_SIZE_ROUNDING = 16
_DEFAULT_TRAIN_POSITIONS = 512
_DEFAULT_TEST_POSITIONS = 256
_DEFAULT_STEP = 7.0  # px at N = 64: overlap ≈ 70 % for the ≈ 22-32 px focused probe
MAX_OBJECTS = 64
"""Most objects one simulated dataset may hold (bounds the mosaic's memory)."""
MAX_SIM_N = 1024
"""Largest simulated pattern size."""
MAX_SIM_POSITIONS = 10_000_000
"""Most scan positions of one simulated object."""


def _even_at_least_4(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and 4 <= value <= MAX_SIM_N
    return None if ok and value % 2 == 0 else f"an even integer in [4, {MAX_SIM_N}]"


def _optional_size(value: Any) -> str | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 5):
        return None
    return "None or an integer >= 5"


@dataclass(frozen=True, kw_only=True)
class SimulationConfig(_ConfigMixin):
    """Everything that determines a synthetic dataset; equal configs give equal data."""

    N: int = _doc("diffraction pattern size in pixels", _even_at_least_4, default=64)
    object_kind: str = _doc(
        "'lines' (upstream benchmark) or 'blobs'", _one_of(OBJECT_KINDS), default="lines"
    )
    object_size: int | None = _doc(
        "side of the square object in pixels (None: the smallest multiple of 16 holding the scan)",
        _optional_size,
        default=None,
    )
    amplitude_min: float = _doc(
        "lowest object amplitude", _real_in(0.0, 1.0, high_open=True), default=0.1
    )
    amplitude_max: float = _doc(
        "highest object amplitude", _real_in(0.0, 10.0, low_open=True), default=1.0
    )
    phase_kind: str = _doc(
        "'tanh' (upstream: from the amplitude image), 'independent' (a second image) or 'none'",
        _one_of(PHASE_KINDS),
        default="tanh",
    )
    phase_max: float = _doc(
        "phase = phase_max·tanh(...), radians", _real_in(0.0, math.pi), default=math.pi
    )
    probe_kind: str = _doc(
        "'focused' (structured) or 'default' (upstream disk)",
        _one_of(PROBE_KINDS),
        default="focused",
    )
    scan_kind: str = _doc("'fermat' spiral or 'raster' grid", _one_of(SCAN_KINDS), default="fermat")
    n_positions: int = _doc(
        "number of scan positions (patterns)",
        _int_in(1, MAX_SIM_POSITIONS),
        default=_DEFAULT_TRAIN_POSITIONS,
    )
    step: float = _doc(
        "neighbour spacing in pixels (raster pitch; typical Fermat neighbour distance)",
        _real_in(0.0, 1000.0, low_open=True),
        default=_DEFAULT_STEP,
    )
    jitter: float = _doc(
        "std of Gaussian position jitter in pixels (clipped to the object)",
        _real_in(0.0, 100.0),
        default=0.0,
    )
    nphotons: float = _doc("mean total photon counts per pattern", _positive_real, default=1e9)
    n_objects: int = _doc(
        "independent objects, each scanned alike, side by side in one objectGuess (N px apart)",
        _int_in(1, MAX_OBJECTS),
        default=1,
    )
    seed: int = _doc("seed of every random draw", _int_at_least(0), default=0)

    def _validate_together(self) -> None:
        if self.amplitude_min >= self.amplitude_max:
            raise ConfigError(
                f"SimulationConfig.amplitude_max: expected > amplitude_min ({self.amplitude_min}), "
                f"found {self.amplitude_max}"
            )
        if self.object_size is not None and self.object_size < (need := _required_size(self)):
            raise ConfigError(
                f"SimulationConfig.object_size: expected >= {need} to hold the {self.scan_kind} "
                f"scan of {self.n_positions} positions (step {self.step}, N {self.N}, "
                f"margin 3·jitter = {3 * self.jitter:g}), "
                f"found {self.object_size}"
            )
        side = self.resolved_object_size
        if side * side * self.n_objects > MAX_CANVAS_PIXELS.value:
            raise ConfigError(
                f"SimulationConfig.object_size: objects of {side} × {side} pixels (× {self.n_objects}): "
                f"{MAX_CANVAS_PIXELS.exceeded(side * side * self.n_objects, 'pixels')}"
            )
        patterns = self.n_positions * self.n_objects * self.N * self.N * 4
        if patterns > MAX_ARRAY_BYTES.value:
            raise ConfigError(
                f"SimulationConfig.n_positions: {self.n_positions * self.n_objects} patterns of "
                f"{self.N} × {self.N}: {MAX_ARRAY_BYTES.exceeded(patterns, 'bytes')}"
            )

    @property
    def resolved_object_size(self) -> int:
        """``object_size``, or the automatic size when it is None."""
        if self.object_size is not None:
            return self.object_size
        need = _required_size(self)
        return -(-need // _SIZE_ROUNDING) * _SIZE_ROUNDING


# --------------------------------------------------------------------------- scan


def _nominal_offsets(kind: str, n: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Scan offsets (dx, dy) in pixels around the scan centre, before jitter."""
    if kind == "fermat":
        k = np.arange(n, dtype=np.float64)
        radius = (step / _FERMAT_SPACING) * np.sqrt(k + 0.5)
        angle = k * _GOLDEN_ANGLE
        return radius * np.cos(angle), radius * np.sin(angle)
    side = math.ceil(math.sqrt(n))
    rows = math.ceil(n / side)
    index = np.arange(n)
    col = (index % side).astype(np.float64) - (side - 1) / 2
    row = (index // side).astype(np.float64) - (rows - 1) / 2
    return col * step, row * step


def _required_size(config: SimulationConfig) -> int:
    """Smallest object side for which the whole scan (plus a 3σ jitter margin) fits.

    Patches stay inside when N/2 <= x <= W − 1 − N/2, i.e. W >= 2·(extent) + N + 1.
    """
    dx, dy = _nominal_offsets(config.scan_kind, config.n_positions, config.step)
    extent = max(float(np.abs(dx).max()), float(np.abs(dy).max())) + 3.0 * config.jitter
    return math.ceil(2.0 * extent + config.N + 1.0)


def scan_positions(
    config: SimulationConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Probe-centre positions (x, y) in object pixels for ``config``'s scan.

    Centred on the object centre ((W−1)/2, (H−1)/2); jitter (if any) is drawn from
    ``rng`` and the result clipped so every patch lies inside the object:
    N/2 <= x, y <= size − 1 − N/2.
    """
    size = config.resolved_object_size
    dx, dy = _nominal_offsets(config.scan_kind, config.n_positions, config.step)
    if config.jitter > 0:
        if rng is None:
            raise ValueError("scan_positions: a jittered scan needs a numpy Generator (rng)")
        dx = dx + rng.normal(0.0, config.jitter, size=dx.shape)
        dy = dy + rng.normal(0.0, config.jitter, size=dy.shape)
    centre = (size - 1) / 2
    low, high = config.N / 2, size - 1 - config.N / 2
    x = np.clip(centre + dx, low, high)
    y = np.clip(centre + dy, low, high)
    return x, y


# --------------------------------------------------------------------------- object


def _smooth(image: np.ndarray, sigmas_weights: tuple[tuple[float, float], ...]) -> np.ndarray:
    """Σ weight·gaussian_filter(image, σ), done once in Fourier space (periodic edges).

    The callers crop away a margin far wider than 4σ, so the periodic boundary gives
    the same result as scipy.ndimage's reflect mode where it matters, at a fraction of
    the cost.
    """
    rows, cols = image.shape
    fy = scipy.fft.fftfreq(rows)[:, None]
    fx = scipy.fft.rfftfreq(cols)[None, :]
    f2 = fy**2 + fx**2
    transfer = sum(w * np.exp(-2.0 * np.pi**2 * s**2 * f2) for s, w in sigmas_weights)
    spectrum = scipy.fft.rfft2(image, workers=-1)
    return scipy.fft.irfft2(spectrum * transfer, s=image.shape, workers=-1)


def _lines_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """Upstream 'lines': segments on a 2·size canvas, gf(1) + 2·gf(5) + 5·gf(10), centre crop."""
    canvas = 2 * size
    n_lines = max(1, round(_LINES_PER_PIXEL * size))
    ends = (canvas * rng.uniform(size=(n_lines, 4))).astype(np.int64)  # r0, c0, r1, c1
    r0, c0, r1, c1 = ends.T
    lengths = np.maximum(np.abs(r1 - r0), np.abs(c1 - c0)) + 1
    line = np.repeat(np.arange(n_lines), lengths)
    start = np.cumsum(lengths) - lengths
    t = (np.arange(lengths.sum()) - start[line]) / np.maximum(lengths[line] - 1, 1)
    rr = np.rint(r0[line] + t * (r1 - r0)[line]).astype(np.int64)
    cc = np.rint(c0[line] + t * (c1 - c0)[line]).astype(np.int64)
    image = np.zeros((canvas, canvas))
    image[rr, cc] = 1.0
    smooth = _smooth(image, ((1.0, 1.0), (5.0, 2.0), (10.0, 5.0)))
    lo = size // 2
    return np.maximum(smooth[lo : lo + size, lo : lo + size], 0.0)


def _blobs_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smoothed white noise (σ 4 px), shifted to be non-negative: a random-texture object."""
    margin = 16
    noise = rng.standard_normal((size + 2 * margin, size + 2 * margin))
    field = _smooth(noise, ((4.0, 1.0),))[margin:-margin, margin:-margin]
    return field - field.min()


def _pattern(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    return _lines_image(size, rng) if kind == "lines" else _blobs_image(size, rng)


def _rescale(image: np.ndarray, low: float, high: float) -> np.ndarray:
    span = float(image.max() - image.min())
    unit = (image - image.min()) / span if span > 0 else np.zeros_like(image)
    return low + (high - low) * unit


def _tanh_phase(image: np.ndarray, phase_max: float) -> np.ndarray:
    """Upstream's phase recipe phase_max·tanh((I − max/2) / (3·mean)) of a non-negative image."""
    mean = float(image.mean())
    if mean <= 0:
        return np.zeros_like(image)
    return phase_max * np.tanh((image - image.max() / 2) / (3.0 * mean))


def make_object(config: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """The (size, size) complex64 object of ``config`` drawn from ``rng``.

    Amplitude: the pattern image min-max rescaled to [amplitude_min, amplitude_max].
    Phase: ``phase_max·tanh((I − max I/2) / (3·mean I))`` of the same image I ('tanh',
    upstream's recipe), of an independently drawn image ('independent'), or 0 ('none').
    """
    size = config.resolved_object_size
    image = _pattern(config.object_kind, size, rng)
    amplitude = _rescale(image, config.amplitude_min, config.amplitude_max)
    if config.phase_kind == "none" or config.phase_max == 0:
        phase = np.zeros_like(amplitude)
    elif config.phase_kind == "tanh":
        phase = _tanh_phase(image, config.phase_max)
    else:
        phase = _tanh_phase(_pattern(config.object_kind, size, rng), config.phase_max)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_probe(config: SimulationConfig) -> np.ndarray:
    """The (N, N) complex64 probe of ``config`` (deterministic; no random draw)."""
    if config.probe_kind == "focused":
        return physics.focused_probe(config.N)
    return physics.default_probe(config.N)


# --------------------------------------------------------------------------- forward


def simulate(config: SimulationConfig) -> PtychoData:
    """A synthetic dataset following the data contract, with its ground-truth object.

    ``diffraction`` holds raw amplitudes ``sqrt(counts)`` (float32) whose mean total
    Σ diffraction² per pattern is ≈ ``nphotons``; ``probe`` is the probe used (not
    normalised); ``object`` the complex ground truth; positions as in :func:`scan_positions`.

    With ``n_objects`` > 1 the objects (each drawn independently, each scanned with the
    same scan) are placed left to right in one ``objectGuess``, N pixels apart, and
    ``scan_index`` numbers them: one file holds a training set of many objects, and
    grouping never mixes patterns of different objects. Object 0 is the object a
    single-object config with the same seed gives.
    """
    if not isinstance(config, SimulationConfig):
        raise TypeError(f"simulate: expected a SimulationConfig, found {type(config).__name__}")
    object_seed, scan_seed, noise_seed = np.random.SeedSequence(config.seed).spawn(3)
    object_rngs = [np.random.default_rng(object_seed)] + [
        np.random.default_rng(child) for child in object_seed.spawn(config.n_objects - 1)
    ]
    scan_rng = np.random.default_rng(scan_seed)
    probe = make_probe(config)
    size = config.resolved_object_size
    pitch = size + config.N
    mosaic = np.zeros((size, pitch * config.n_objects - config.N), dtype=np.complex64)
    xs, ys, intensities = [], [], []
    for index, rng in enumerate(object_rngs):
        obj = make_object(config, rng)
        x, y = scan_positions(config, scan_rng)
        mosaic[:, index * pitch : index * pitch + size] = obj
        patches = extract_patches(obj, x, y, config.N)
        intensities.append(
            np.square(physics.diffraction_amplitude(patches, probe), dtype=np.float64)
        )
        xs.append(x + index * pitch)
        ys.append(y)
    intensity = np.concatenate(intensities)
    scale = config.nphotons / float(intensity.sum(axis=(1, 2)).mean())
    intensity *= scale
    counts = np.random.default_rng(noise_seed).poisson(intensity)
    amplitude = np.sqrt(counts, dtype=np.float32)

    return validate(
        PtychoData(
            diffraction=amplitude,
            xcoords=np.concatenate(xs),
            ycoords=np.concatenate(ys),
            probe=probe,
            object=mosaic,
            scan_index=np.repeat(np.arange(config.n_objects, dtype=np.int64), config.n_positions),
            source=f"simulate(seed={config.seed}, object_kind={config.object_kind!r})",
        )
    )


def default_simulation_config(
    split: str = "train",
    *,
    N: int = 64,
    n_positions: int | None = None,
    seed: int | None = None,
    nphotons: float = 1e9,
    n_objects: int = 1,
) -> SimulationConfig:
    """The config behind :func:`default_dataset` (for inspection or variation).

    Train and test share probe, scan kind and step but use different seeds
    (2·seed for 'train', 2·seed + 1 for 'test'), hence different objects; with
    ``n_objects`` > 1 the extra objects are new draws of the same split's seed, so a
    training set of many objects never contains the test object.
    """
    if split not in SPLITS:
        raise ValueError(f"default_dataset: split expected one of {SPLITS!r}, found {split!r}")
    if n_positions is None:
        n_positions = _DEFAULT_TRAIN_POSITIONS if split == "train" else _DEFAULT_TEST_POSITIONS
    base = 0 if seed is None else seed
    if isinstance(base, bool) or not isinstance(base, int) or base < 0:
        raise ValueError(f"default_dataset: seed expected None or an integer >= 0, found {seed!r}")
    return SimulationConfig(
        N=N,
        n_positions=n_positions,
        step=_DEFAULT_STEP * min(1.0, N / 64),
        nphotons=nphotons,
        n_objects=n_objects,
        seed=2 * base + SPLITS.index(split),
    )


def default_dataset(
    split: str = "train",
    *,
    N: int = 64,
    n_positions: int | None = None,
    seed: int | None = None,
    nphotons: float = 1e9,
    n_objects: int = 1,
) -> PtychoData:
    """The embedded default dataset of the demo and the tests.

    'lines' object with phase, focused probe, Fermat spiral with 7 px neighbour spacing
    (scaled down for N < 64), nphotons 1e9; 512 positions on a 256×256 object for
    'train', 256 positions on a 208×208 object for 'test'. Train and test objects differ.
    ``nphotons`` sets the dose and ``n_objects`` the number of objects (each with the
    split's scan), e.g. a larger training set.
    """
    config = default_simulation_config(
        split, N=N, n_positions=n_positions, seed=seed, nphotons=nphotons, n_objects=n_objects
    )
    return simulate(config)

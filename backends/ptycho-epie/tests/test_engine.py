"""The rPIE engine against ptycho's numpy reference physics and geometry."""

from __future__ import annotations

import numpy as np
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st
from ptycho_epie import engine

from ptycho_core import geometry, physics
from ptycho_core.metrics import fourier_shift

N = 32


def smooth_object(size: int, seed: int) -> np.ndarray:
    """A band-limited complex object (Gaussian-filtered noise), amplitude in ~[0.5, 1]."""
    rng = np.random.default_rng(seed)
    fy = scipy.fft.fftfreq(size)[:, None]
    fx = scipy.fft.fftfreq(size)[None, :]
    lowpass = np.exp(-2 * np.pi**2 * 4.0**2 * (fy**2 + fx**2))
    a, p = (
        scipy.fft.ifft2(scipy.fft.fft2(rng.standard_normal((size, size))) * lowpass).real
        for _ in range(2)
    )
    amplitude = 0.75 + 0.25 * a / np.abs(a).max()
    return (amplitude * np.exp(1j * 0.8 * p / np.abs(p).max())).astype(np.complex64)


def probe() -> np.ndarray:
    return physics.normalize_probe(physics.focused_probe(N), 4.0)


def on_canvas(obj: np.ndarray, scan: engine.Scan) -> np.ndarray:
    """The part of ``obj`` (object pixels) that the scan's canvas covers."""
    (r0, c0), (h, w) = scan.origin, scan.shape
    assert r0 >= 0 and c0 >= 0 and r0 + h <= obj.shape[0] and c0 + w <= obj.shape[1]
    return np.ascontiguousarray(obj[r0 : r0 + h, c0 : c0 + w])


def model_data(
    obj: np.ndarray, scan: engine.Scan, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """N·X in FFT order by the engine's own model, and the object on the scan's canvas."""
    canvas = on_canvas(obj, scan)
    windows = canvas.ravel()[scan.flat_indices(np.arange(scan.n))]
    psi = engine.shift_images(probe(), scan.frac, 1) * windows
    return np.abs(scipy.fft.fft2(psi)).astype(np.float32), canvas


@given(st.floats(-0.5, 0.5), st.floats(-0.5, 0.5))
@settings(max_examples=25, deadline=None)
def test_shift_is_unitary_and_undone_by_the_opposite_shift(dy: float, dx: float) -> None:
    image = smooth_object(N, 1)
    frac = np.array([[dy, dx]])
    moved = engine.shift_images(image, frac, 1)[0]
    back = engine.shift_images(moved, -frac, 1)[0]
    np.testing.assert_allclose(back, image, atol=2e-5)
    assert np.sum(np.abs(moved) ** 2) == np.float32(np.sum(np.abs(image) ** 2)) or np.isclose(
        np.sum(np.abs(moved) ** 2), np.sum(np.abs(image) ** 2), rtol=1e-5
    )


def test_forward_model_matches_core_physics_at_integer_positions() -> None:
    obj = smooth_object(96, 2)
    x = np.array([40.0, 48.0, 55.0])
    y = np.array([41.0, 50.0, 47.0])
    scan = engine.make_scan(x, y, N)
    measured, _ = model_data(obj, scan, x, y)
    reference = physics.diffraction_amplitude(geometry.extract_patches(obj, x, y, N), probe())
    np.testing.assert_allclose(
        measured / N, scipy.fft.ifftshift(reference, axes=(-2, -1)), rtol=0, atol=2e-5
    )
    assert np.all(scan.frac == 0)


@given(st.lists(st.tuples(st.floats(30, 60), st.floats(30, 60)), min_size=1, max_size=6))
@settings(max_examples=25, deadline=None)
def test_extracted_patches_follow_the_core_pixel_convention(points: list) -> None:
    """patch[i, j] = object(y + i − N/2, x + j − N/2): equal to core's patches at integer
    positions, and to the exactly shifted (band-limited, periodic) object at sub-pixel ones."""
    obj = smooth_object(96, 3)
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    scan = engine.make_scan(np.r_[x, 30.0, 60.0], np.r_[y, 30.0, 60.0], N)
    canvas = on_canvas(obj, scan)
    row0, col0 = scan.origin  # the canvas frame, as the backend reads its object
    ours = geometry.extract_patches_spline(canvas, x - col0, y - row0, N)
    for k in range(len(points)):
        ix, iy = np.round(x[k]), np.round(y[k])
        moved = fourier_shift(obj, -(y[k] - iy), -(x[k] - ix))  # moved(r, c) = obj(r + dy, c + dx)
        exact = geometry.extract_patches(moved, np.array([ix]), np.array([iy]), N)[0]
        inner = (slice(2, -2), slice(2, -2))  # the spline mirrors at the canvas border
        np.testing.assert_allclose(ours[k][inner], exact[inner], atol=1e-4)
    rounded = geometry.extract_patches_spline(canvas, np.round(x) - col0, np.round(y) - row0, N)
    core = geometry.extract_patches(obj, np.round(x), np.round(y), N)
    np.testing.assert_allclose(rounded, core, atol=1e-5)


@given(st.integers(0, 2**16))
@settings(max_examples=10, deadline=None)
def test_the_true_object_is_a_fixed_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    obj = smooth_object(96, seed)
    x = rng.uniform(30, 66, 12)
    y = rng.uniform(30, 66, 12)
    scan = engine.make_scan(x, y, N)
    measured, canvas = model_data(obj, scan, x, y)
    batches = engine.batch_order(scan.n, 4, rng)
    after, _, losses = engine.iterate(
        canvas,
        probe(),
        scan,
        measured,
        batches,
        alpha=0.1,
        beta=1.0,
        update_probe=True,
        scale=1.0,
        workers=1,
    )
    assert losses is not None and losses.fourier_error < 1e-10
    np.testing.assert_allclose(after, canvas, atol=1e-4)


def test_rpie_reconstructs_from_a_flat_start() -> None:
    obj = smooth_object(112, 7)
    rng = np.random.default_rng(0)
    grid = np.arange(30, 84, 5.0)
    x, y = (v.ravel() + rng.uniform(-0.5, 0.5, v.size) for v in np.meshgrid(grid, grid))
    scan = engine.make_scan(x, y, N)
    measured, truth = model_data(obj, scan, x, y)
    errors = []
    current = None
    for current, _, losses in engine.rpie(  # noqa: B007  (the last state is kept)
        engine.flat_object(scan, probe(), measured),
        probe(),
        scan,
        measured,
        np.arange(scan.n),
        iterations=30,
        batch_size=16,
        rng=rng,
        alpha=0.05,
        momentum=0.0,
        measure=True,
        workers=1,
    ):
        errors.append(losses.fourier_error)
    assert errors[-1] < 1e-2 * errors[0]
    inner = (slice(20, -20),) * 2  # well inside the scanned area
    a, b = current[inner], truth[inner]
    correlation = abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert correlation > 0.999

"""The TensorFlow physics against the numpy references of ptycho_core (geometry and physics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core import geometry
from ptycho_core import physics as core_physics
from ptycho_core.config import ModelConfig
from ptycho_tf import physics
from ptycho_tf._keras import tf
from ptycho_tf.training import build_network

shifts = st.floats(min_value=-12.0, max_value=12.0, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(min_value=1, max_value=40),
    width=st.integers(min_value=1, max_value=40),
    dx=shifts,
    dy=shifts,
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_translate_matches_the_numpy_reference(height, width, dx, dy, seed) -> None:
    image = np.random.default_rng(seed).standard_normal((height, width)).astype(np.float32)
    expected = geometry.translate(image, float(dx), float(dy))
    found = physics.translate(image[None], tf.constant([dx]), tf.constant([dy])).numpy()[0]
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)


def test_translate_moves_an_off_centre_delta_by_plus_dx_columns_and_plus_dy_rows() -> None:
    image = np.zeros((3, 24, 30), dtype=np.float32)
    image[:, 5, 7] = 1.0
    dx = tf.constant([3.0, -4.0, 2.5])
    dy = tf.constant([2.0, 6.0, -0.5])
    out = physics.translate(image, dx, dy).numpy()
    assert out[0, 7, 10] == 1.0 and out[0].sum() == pytest.approx(1.0)
    assert out[1, 11, 3] == 1.0
    # half-pixel shifts split the delta over the neighbours: rows 4/5, columns 9/10
    np.testing.assert_allclose(out[2, 4:6, 9:11], np.full((2, 2), 0.25), atol=1e-7)
    for k in range(3):
        ref = geometry.translate(image[k], float(dx[k]), float(dy[k]))
        np.testing.assert_allclose(out[k], ref, atol=1e-6)


def test_translate_of_complex_images_and_bad_shapes() -> None:
    rng = np.random.default_rng(3)
    image = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(
        np.complex64
    )
    out = physics.translate(image[None], tf.constant([1.25]), tf.constant([-2.5]))
    assert out.dtype == tf.complex64
    np.testing.assert_allclose(out.numpy()[0], geometry.translate(image, 1.25, -2.5), atol=1e-5)
    with pytest.raises(ValueError, match=r"expected images of shape \(M, H, W\)"):
        physics.translate(np.zeros((16, 16), np.float32), tf.zeros(1), tf.zeros(1))


def _parts(z: np.ndarray) -> np.ndarray:
    """complex (..., H, W) → float32 (..., 2, H, W) [real, imag]."""
    return np.stack([z.real, z.imag], axis=-3).astype(np.float32)


def _complex(parts: np.ndarray) -> np.ndarray:
    return parts[..., 0, :, :] + 1j * parts[..., 1, :, :]


def test_extract_patches_sees_the_object_at_each_position() -> None:
    """Canvas pixel (pad + N/2) is the group centre; channel c is seen at centre − δ_c."""
    rng = np.random.default_rng(5)
    N, P = 64, 78
    canvas = (rng.standard_normal((P, P)) + 1j * rng.standard_normal((P, P))).astype(np.complex64)
    offsets = np.array([[[1.5, -2.25], [0.0, 0.0], [-3.0, 4.75], [2.0, 2.0]]], dtype=np.float32)
    patches = _complex(physics.extract_patches(_parts(canvas)[None], offsets, N).numpy()[0])
    centre = physics.canvas_padding(N, P) + N / 2
    for c in range(4):
        x = centre - float(offsets[0, c, 0])
        y = centre - float(offsets[0, c, 1])
        ref = geometry.extract_patches(canvas, np.array([x]), np.array([y]), N)[0]
        np.testing.assert_allclose(patches[c], ref, atol=1e-5)


def test_merge_puts_each_patch_back_at_its_position() -> None:
    """object → patches at known positions (core) → in-model merge → the object again."""
    rng = np.random.default_rng(11)
    N, P = 64, 78
    obj = (0.5 + rng.random((P, P)) * np.exp(1j * rng.random((P, P)))).astype(np.complex64)
    positions = np.array([[2.0, -3.0], [-4.0, 1.0], [3.0, 3.0], [-1.0, -1.0]])  # rel. to centre
    positions -= positions.mean(axis=0)
    centre = physics.canvas_padding(N, P) + N / 2
    patches = geometry.extract_patches(obj, centre + positions[:, 0], centre + positions[:, 1], N)
    inner = np.zeros((N, N), dtype=bool)  # only the central N/2 box is trusted by the merge
    inner[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = True
    offsets = -positions[None].astype(np.float32)  # coords_relative sign
    canvas = _complex(physics.merge_patches(_parts(patches * inner)[None], offsets, P).numpy()[0])
    weight = sum(
        geometry.translate(np.pad(inner.astype(np.float32), (P - N) // 2), *positions[c])
        for c in range(4)
    )
    covered = weight > 0.5
    expected = obj * weight / (weight + physics.MERGE_EPSILON)
    np.testing.assert_allclose(canvas[covered], expected[covered], rtol=1e-5, atol=1e-5)
    assert covered.sum() > (N // 2) ** 2  # the union of four shifted boxes


def test_merge_stays_finite_where_no_centre_mask_reaches() -> None:
    """§4.2: outside every centre box the canvas is the raw sum × 1000, never inf/nan."""
    rng = np.random.default_rng(0)
    parts = (rng.standard_normal((8, 4, 2, 64, 64)) * 1e3).astype(np.float32)
    offsets = ((rng.random((8, 4, 2)) - 0.5) * 14).astype(np.float32)
    canvas = physics.merge_patches(parts, offsets, 78).numpy()
    assert canvas.shape == (8, 2, 78, 78) and np.all(np.isfinite(canvas))
    raw = physics.merge_patches(parts, np.zeros((8, 4, 2), np.float32), 78).numpy()[:, :, 7, 7]
    np.testing.assert_allclose(
        raw, parts[:, :, :, 0, 0].sum(axis=1) / physics.MERGE_EPSILON, rtol=1e-4
    )


def test_diffraction_matches_the_core_forward_model() -> None:
    rng = np.random.default_rng(2)
    N = 64
    patches = (rng.random((3, 2, N, N)) * np.exp(2j * np.pi * rng.random((3, 2, N, N)))).astype(
        np.complex64
    )
    probe = core_physics.normalize_probe(core_physics.focused_probe(N), 4.0)
    expected = core_physics.diffraction_amplitude(patches, probe)
    wave = physics.illuminate(_parts(patches), _parts(probe))
    found = physics.diffract(wave).numpy()
    assert found.dtype == np.float32 and found.shape == (3, 2, N, N)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))
    # zero frequency at (N/2, N/2): a flat field puts all its power there
    flat = physics.diffract(tf.ones((1, N, N), tf.complex64)).numpy()[0]
    assert flat[N // 2, N // 2] == pytest.approx(N) and flat.sum() == pytest.approx(N)


def test_model_forward_equals_the_core_model_on_its_own_object() -> None:
    """gridsize 1: the amplitude is s₀·g·A(canvas crop · P̃) — the core forward model."""
    N = 64
    probe = core_physics.normalize_probe(core_physics.focused_probe(N), 4.0)
    network = build_network(ModelConfig(N=N), probe, 31.25)
    network.log_gain.assign(np.log(1.5))
    rng = np.random.default_rng(4)
    x = rng.random((2, N, N, 1), dtype=np.float32)
    coords = np.zeros((2, 1, 2, 1), np.float32)
    amplitude = network((x, coords)).numpy()[..., 0]
    obj = network.predict_object(x, coords).numpy()[..., 0]  # the central N×N of the canvas
    expected = 31.25 * 1.5 * core_physics.diffraction_amplitude(obj, probe)
    np.testing.assert_allclose(amplitude, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))


def test_gaussian_smoothing_and_probe_mask() -> None:
    rng = np.random.default_rng(8)
    probe = _parts(
        (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(np.complex64)
    )
    assert physics.effective_probe(probe) is probe
    smoothed = physics.gaussian_smooth(probe, 1.0).numpy()
    padded = np.pad(probe, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / 2.0)
    kernel = np.outer(g, g) / g.sum() ** 2
    expected = sum(
        kernel[i, j] * padded[:, i : i + 16, j : j + 16] for i in range(3) for j in range(3)
    )
    np.testing.assert_allclose(smoothed, expected, atol=1e-6)
    mask = core_physics.probe_disk_mask(16).astype(np.float32)
    masked = physics.effective_probe(probe, mask=tf.constant(mask)).numpy()
    np.testing.assert_array_equal(masked, probe * mask)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**16), scale=st.floats(min_value=0.1, max_value=1e3)
)
def test_losses_match_the_numpy_reference(seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    predicted = (rng.random((2, 8, 8, 1)) * scale).astype(np.float32)
    target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    nll = float(tf.reduce_mean(physics.poisson_nll(predicted, target)))
    expected = core_physics.poisson_nll(
        predicted.astype(np.float64) ** 2, target.astype(np.float64) ** 2
    )
    assert nll == pytest.approx(expected, rel=1e-4, abs=1e-4 * scale**2)
    mae = float(tf.reduce_mean(physics.mae_loss(predicted, target)))
    assert mae == pytest.approx(float(np.mean(np.abs(predicted - target))), rel=1e-5, abs=1e-6)
    assert float(physics.poisson_deviance(target + 0.0, target)) == pytest.approx(
        0.0, abs=1e-3 * scale**2
    )

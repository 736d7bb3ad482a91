"""A backend's physics against the numpy references of ptycho_core (geometry and physics)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from framework_suites.framework import Framework
from ptycho_core import geometry
from ptycho_core import physics as core_physics
from ptycho_core.config import ModelConfig

shifts = st.floats(min_value=-12.0, max_value=12.0, allow_nan=False, width=32)

# Each framework's subclass runs the same property; they hold no state of their own, so an
# example found under one framework may be replayed under the other.
one_property_per_framework = [HealthCheck.differing_executors]


def _complex_field(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def object_and_probe(seed: int, *shape: int) -> tuple[np.ndarray, np.ndarray]:
    """Object patches of ``shape`` (amplitude in [0, 1), any phase) and a focused probe."""
    rng = np.random.default_rng(seed)
    obj = rng.random(shape) * np.exp(2j * np.pi * rng.random(shape))
    probe = core_physics.normalize_probe(core_physics.focused_probe(shape[-1]), 4.0)
    return obj.astype(np.complex64), probe


class PhysicsSuite:
    """The physics module of the backend ``fw`` against the numpy references."""

    @settings(max_examples=40, deadline=None, suppress_health_check=one_property_per_framework)
    @given(
        height=st.integers(min_value=1, max_value=40),
        width=st.integers(min_value=1, max_value=40),
        dx=shifts,
        dy=shifts,
        seed=st.integers(min_value=0, max_value=2**16),
    )
    def test_translate_matches_the_numpy_reference(
        self, fw: Framework, height, width, dx, dy, seed
    ) -> None:
        image = np.random.default_rng(seed).standard_normal((height, width)).astype(np.float32)
        expected = geometry.translate(image, float(dx), float(dy))
        found = fw.translate(image[None], [dx], [dy])[0]
        np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)

    def test_translate_moves_an_off_centre_delta_by_plus_dx_columns_and_plus_dy_rows(
        self, fw: Framework
    ) -> None:
        image = np.zeros((3, 24, 30), dtype=np.float32)
        image[:, 5, 7] = 1.0
        dx = np.array([3.0, -4.0, 2.5], np.float32)
        dy = np.array([2.0, 6.0, -0.5], np.float32)
        out = fw.translate(image, dx, dy)
        assert out[0, 7, 10] == 1.0 and out[0].sum() == pytest.approx(1.0)
        assert out[1, 11, 3] == 1.0
        # half-pixel shifts split the delta over the neighbours: rows 4/5, columns 9/10
        np.testing.assert_allclose(out[2, 4:6, 9:11], np.full((2, 2), 0.25), atol=1e-7)
        for k in range(3):
            ref = geometry.translate(image[k], float(dx[k]), float(dy[k]))
            np.testing.assert_allclose(out[k], ref, atol=1e-6)

    def test_translate_of_complex_images_and_bad_shapes(self, fw: Framework) -> None:
        image = _complex_field(np.random.default_rng(3), 16, 16)
        out = fw.translate(image[None], [1.25], [-2.5])
        assert out.dtype == np.complex64
        np.testing.assert_allclose(out[0], geometry.translate(image, 1.25, -2.5), atol=1e-5)
        with pytest.raises(ValueError, match=r"expected images of shape \(M, H, W\)"):
            fw.translate(np.zeros((16, 16), np.float32), [0.0], [0.0])

    def test_extract_patches_sees_the_object_at_each_position(self, fw: Framework) -> None:
        """Canvas pixel (pad + N/2) is the group centre; channel c is seen at centre − δ_c."""
        N, P = 64, 78
        canvas = _complex_field(np.random.default_rng(5), P, P)
        offsets = np.array([[[1.5, -2.25], [0.0, 0.0], [-3.0, 4.75], [2.0, 2.0]]], np.float32)
        patches = fw.extract_patches(canvas[None], offsets, N)[0]
        centre = fw.physics.canvas_padding(N, P) + N / 2
        for c in range(4):
            x = centre - float(offsets[0, c, 0])
            y = centre - float(offsets[0, c, 1])
            ref = geometry.extract_patches(canvas, np.array([x]), np.array([y]), N)[0]
            np.testing.assert_allclose(patches[c], ref, atol=1e-5)

    def test_merge_puts_each_patch_back_at_its_position(self, fw: Framework) -> None:
        """object → patches at known positions (core) → in-model merge → the object again."""
        rng = np.random.default_rng(11)
        N, P = 64, 78
        obj = (0.5 + rng.random((P, P)) * np.exp(1j * rng.random((P, P)))).astype(np.complex64)
        positions = np.array([[2.0, -3.0], [-4.0, 1.0], [3.0, 3.0], [-1.0, -1.0]])  # rel. centre
        positions -= positions.mean(axis=0)
        centre = fw.physics.canvas_padding(N, P) + N / 2
        patches = geometry.extract_patches(
            obj, centre + positions[:, 0], centre + positions[:, 1], N
        )
        inner = np.zeros((N, N), dtype=bool)  # only the central N/2 box is trusted by the merge
        inner[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = True
        offsets = -positions[None].astype(np.float32)  # coords_relative sign
        canvas = fw.merge_patches((patches * inner)[None], offsets, P)[0]
        weight = sum(
            geometry.translate(np.pad(inner.astype(np.float32), (P - N) // 2), *positions[c])
            for c in range(4)
        )
        covered = weight > 0.5
        expected = obj * weight / (weight + fw.physics.MERGE_EPSILON)
        np.testing.assert_allclose(canvas[covered], expected[covered], rtol=1e-5, atol=1e-5)
        assert covered.sum() > (N // 2) ** 2  # the union of four shifted boxes

    def test_merge_stays_finite_where_no_centre_mask_reaches(self, fw: Framework) -> None:
        """§4.2: outside every centre box the canvas is the raw sum × 1000, never inf/nan."""
        rng = np.random.default_rng(0)
        patches = (_complex_field(rng, 8, 4, 64, 64) * 1e3).astype(np.complex64)
        offsets = ((rng.random((8, 4, 2)) - 0.5) * 14).astype(np.float32)
        canvas = fw.merge_patches(patches, offsets, 78)
        assert canvas.shape == (8, 78, 78) and np.all(np.isfinite(canvas))
        raw = fw.merge_patches(patches, np.zeros((8, 4, 2), np.float32), 78)[:, 7, 7]
        expected = patches[:, :, 0, 0].sum(axis=1) / fw.physics.MERGE_EPSILON
        np.testing.assert_allclose(raw, expected, rtol=1e-4)

    def test_diffraction_matches_the_core_forward_model(self, fw: Framework) -> None:
        N = 64
        patches, probe = object_and_probe(2, 3, 2, N, N)
        expected = core_physics.diffraction_amplitude(patches, probe)
        found = fw.illuminate_and_diffract(patches, probe)
        assert found.dtype == np.float32 and found.shape == (3, 2, N, N)
        np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5 * float(expected.max()))
        # Parseval: Σ A² = Σ |ψ|² for every pattern
        np.testing.assert_allclose(
            np.sum(found.astype(np.float64) ** 2, axis=(-2, -1)),
            np.sum(np.abs(patches * probe).astype(np.float64) ** 2, axis=(-2, -1)),
            rtol=1e-5,
        )
        # zero frequency at (N/2, N/2): a flat field puts all its power there
        flat = fw.diffract(np.ones((1, N, N), np.complex64))[0]
        assert flat[N // 2, N // 2] == pytest.approx(N) and flat.sum() == pytest.approx(N)

    @pytest.mark.parametrize(
        ("probe_kind", "intensity_scale", "gain"),
        [("default", 988.2, np.exp(0.3)), ("focused", 31.25, 1.5)],
        ids=["default-probe", "focused-probe"],
    )
    def test_network_amplitude_is_s0_g_times_the_core_diffraction_of_its_object(
        self, fw: Framework, probe_kind: str, intensity_scale: float, gain: float
    ) -> None:
        """The whole training path for gridsize 1: merge, extract, illuminate, diffract, scale."""
        N = 64
        make = {"default": core_physics.default_probe, "focused": core_physics.focused_probe}
        probe = core_physics.normalize_probe(make[probe_kind](N), 4.0)
        network = fw.build_network(ModelConfig(N=N, gridsize=1), probe, intensity_scale, seed=4)
        fw.set_log_gain(network, np.log(gain))
        x = np.random.default_rng(4).random((2, N, N, 1), dtype=np.float32)
        coords = np.zeros((2, 1, 2, 1), np.float32)
        obj = fw.predict_object(network, x, coords)[..., 0]  # the central N×N of the canvas
        expected = intensity_scale * gain * core_physics.diffraction_amplitude(obj, probe)
        found = fw.amplitude(network, x, coords)[..., 0]
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5 * float(expected.max()))

    def test_gridsize_two_amplitudes_come_from_the_patches_at_each_position(
        self, fw: Framework
    ) -> None:
        N = 64
        probe = core_physics.normalize_probe(core_physics.default_probe(N), 4.0)
        config = ModelConfig(N=N, gridsize=2)
        network = fw.build_network(config, probe, 31.25, seed=6)
        x = np.random.default_rng(6).random((1, N, N, 4), dtype=np.float32)
        coords = np.array([[[[3.0, -3.0, 3.0, -3.0], [3.0, 3.0, -3.0, -3.0]]]], np.float32)
        amp, phase = fw.generate(network, x)
        obj = (amp * np.exp(1j * phase)).astype(np.complex64).transpose(0, 3, 1, 2)
        offsets = fw.offsets(network, coords)
        canvas = fw.merge_patches(obj, offsets, config.canvas_size)[0]
        centre = fw.physics.canvas_padding(N, config.canvas_size) + N / 2
        xs = centre - offsets[0, :, 0]
        ys = centre - offsets[0, :, 1]
        patches = geometry.extract_patches(canvas, xs, ys, N)
        expected = 31.25 * network.output_gain * core_physics.diffraction_amplitude(patches, probe)
        found = fw.amplitude(network, x, coords)[0].transpose(2, 0, 1)
        np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * expected.max())

    def test_losses_match_their_definitions(self, fw: Framework) -> None:
        rng = np.random.default_rng(9)
        predicted = rng.random((2, 1, 8, 8)).astype(np.float32) * 30
        target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
        reference = core_physics.poisson_nll(
            predicted.astype(np.float64) ** 2, target.astype(np.float64) ** 2
        )
        assert fw.poisson_nll(predicted, target) == pytest.approx(reference, rel=1e-5)
        assert fw.mae_loss(predicted, target) == pytest.approx(
            np.abs(predicted - target).mean(), rel=1e-5
        )
        assert fw.poisson_deviance(target, target) == pytest.approx(0.0, abs=1e-3)
        assert fw.poisson_deviance(predicted, target) > 1.0
        obj = np.full((1, 1, 4, 4), 0.8 * np.exp(0.5j), np.complex64)
        loss = fw.supervised_loss(
            np.full((1, 1, 4, 4), 0.6, np.float32), np.full((1, 1, 4, 4), 0.25, np.float32), obj
        )
        assert loss == pytest.approx(2 * 0.2 + 4 * 0.25, rel=1e-6)

    @settings(max_examples=25, deadline=None, suppress_health_check=one_property_per_framework)
    @given(
        seed=st.integers(min_value=0, max_value=2**16),
        scale=st.floats(min_value=0.1, max_value=1e3),
    )
    def test_losses_match_the_numpy_reference_at_every_scale(
        self, fw: Framework, seed: int, scale: float
    ) -> None:
        rng = np.random.default_rng(seed)
        predicted = (rng.random((2, 8, 8, 1)) * scale).astype(np.float32)
        target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
        expected = core_physics.poisson_nll(
            predicted.astype(np.float64) ** 2, target.astype(np.float64) ** 2
        )
        nll = fw.poisson_nll(predicted, target)
        assert nll == pytest.approx(expected, rel=1e-4, abs=1e-4 * scale**2)
        mae = fw.mae_loss(predicted, target)
        assert mae == pytest.approx(float(np.mean(np.abs(predicted - target))), rel=1e-5, abs=1e-6)
        assert fw.poisson_deviance(target, target) == pytest.approx(0.0, abs=1e-3 * scale**2)

    def test_probe_smoothing_and_mask(self, fw: Framework) -> None:
        N = 64
        probe = core_physics.normalize_probe(core_physics.default_probe(N), 4.0)
        np.testing.assert_array_equal(fw.effective_probe(probe), probe)
        constant = np.full((N, N), 2.0 - 1.0j, dtype=np.complex64)
        smoothed = fw.gaussian_smooth(constant, 1.0)
        np.testing.assert_allclose(smoothed, constant, rtol=1e-6)  # normalised kernel, reflect
        delta = np.zeros((N, N), np.float32)
        delta[10, 20] = 1.0
        blurred = fw.gaussian_smooth(delta, 0.8)
        assert blurred.sum() == pytest.approx(1.0) and blurred[10, 20] < 1.0
        assert np.count_nonzero(blurred) == 9
        # edges reflect without repeating the border pixel (scipy's 'mirror'), real and
        # imaginary parts smoothed apart
        field = _complex_field(np.random.default_rng(1), 2, N, N)
        g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.7**2))
        kernel = np.outer(g, g) / g.sum() ** 2
        expected = np.stack(
            [
                ndimage.correlate(f.real, kernel, mode="mirror")
                + 1j * ndimage.correlate(f.imag, kernel, mode="mirror")
                for f in field
            ]
        )
        np.testing.assert_allclose(fw.gaussian_smooth(field, 0.7), expected, atol=1e-5)
        mask = core_physics.probe_disk_mask(N).astype(np.float32)
        masked = fw.effective_probe(probe, mask=mask)
        np.testing.assert_array_equal(masked, probe * mask)
        assert np.abs(masked[mask == 0]).max() == 0
        network = fw.build_network(ModelConfig(N=N, probe_mask=True), probe, 1.0)
        np.testing.assert_array_equal(fw.illuminating_probe(network), masked)

"""The numpy reference forward model (specs/data-contract.md §4, specs/model.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptycho_core import physics

EVEN_N = st.sampled_from([2, 4, 6, 8, 12, 16, 32])
SEEDS = st.integers(0, 2**32 - 1)


def _complex(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.complex64) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


# --------------------------------------------------------------------------- mask


@pytest.mark.parametrize("N", [4, 8, 16, 64, 128])
def test_probe_disk_mask_is_the_disk_r_below_n_over_4_about_the_array_centre(N):
    mask = physics.probe_disk_mask(N)
    assert mask.shape == (N, N) and mask.dtype == np.bool_
    rows, cols = np.indices((N, N))
    expected = (rows - (N - 1) / 2) ** 2 + (cols - (N - 1) / 2) ** 2 < (N // 4) ** 2
    np.testing.assert_array_equal(mask, expected)
    # Centred at (N−1)/2: symmetric under flips and transposition.
    np.testing.assert_array_equal(mask, mask[::-1, ::-1])
    np.testing.assert_array_equal(mask, mask.T)
    assert abs(mask.sum() - np.pi * (N // 4) ** 2) < 2 * np.pi * (N // 4) + 4


@pytest.mark.parametrize("bad", [0, 3, -4, 7.0, True, "64"])
def test_sizes_must_be_even_positive_integers(bad):
    for function in (physics.probe_disk_mask, physics.default_probe, physics.focused_probe):
        with pytest.raises(ValueError, match="even integer"):
            function(bad)


# --------------------------------------------------------------------------- normalisation


@settings(max_examples=40, deadline=None)
@given(N=EVEN_N.filter(lambda n: n >= 4), seed=SEEDS, scale=st.floats(0.1, 20.0))
def test_normalize_probe_sets_mean_masked_magnitude_to_one_over_probe_scale(N, seed, scale):
    probe = _complex(np.random.default_rng(seed), (N, N), np.complex128)
    out = physics.normalize_probe(probe, scale)
    assert out.dtype == np.complex64 and out.shape == (N, N)
    mask = physics.probe_disk_mask(N)
    assert np.mean(np.abs(mask * out.astype(np.complex128))) == pytest.approx(1 / scale, rel=1e-5)
    # Only the level changes: the result is a positive multiple of the input.
    ratio = out.astype(np.complex128) / probe
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-5)
    assert ratio.flat[0].real > 0 and abs(ratio.flat[0].imag) < 1e-6 * abs(ratio.flat[0])


def test_normalize_probe_is_scale_invariant_and_matches_the_flat_disk_estimate():
    N, scale = 64, 4.0
    mask = physics.probe_disk_mask(N).astype(np.complex64)
    out = physics.normalize_probe(mask * 3.7, scale)
    np.testing.assert_allclose(out, physics.normalize_probe(mask, scale), rtol=1e-6)
    # A flat probe filling the mask: |P̃| = N² / (probe_scale · mask area) ≈ 16 / (π·scale).
    inside = np.abs(out[mask.real > 0])
    assert inside.mean() == pytest.approx(N * N / (scale * mask.real.sum()), rel=1e-6)
    assert inside.mean() == pytest.approx(16 / (np.pi * scale), rel=0.05)


@pytest.mark.parametrize(
    ("probe", "scale", "match"),
    [
        (np.zeros((8, 8), np.complex64), 4.0, "non-zero"),
        (np.ones((8, 6), np.complex64), 4.0, "square"),
        (np.ones(8, np.complex64), 4.0, "square"),
        (np.ones((8, 8), np.complex64), 0.0, "probe_scale"),
        (np.ones((8, 8), np.complex64), float("nan"), "probe_scale"),
    ],
)
def test_normalize_probe_rejects_bad_input(probe, scale, match):
    with pytest.raises(ValueError, match=match):
        physics.normalize_probe(probe, scale)


# --------------------------------------------------------------------------- diffraction


@settings(max_examples=40, deadline=None)
@given(
    N=EVEN_N,
    seed=SEEDS,
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    double=st.booleans(),
)
def test_parseval_sum_of_squared_amplitudes_equals_exit_wave_power(N, seed, lead, double):
    rng = np.random.default_rng(seed)
    dtype = np.complex128 if double else np.complex64
    patches = _complex(rng, (*lead, N, N), dtype)
    probe = _complex(rng, (N, N), dtype)
    amplitude = physics.diffraction_amplitude(patches, probe)
    assert amplitude.shape == patches.shape
    assert amplitude.dtype == (np.float64 if double else np.float32)
    assert np.all(amplitude >= 0)
    power = np.sum(np.abs(patches.astype(np.complex128) * probe) ** 2, axis=(-2, -1))
    total = np.sum(amplitude.astype(np.float64) ** 2, axis=(-2, -1))
    np.testing.assert_allclose(total, power, rtol=1e-9 if double else 2e-5)


@settings(max_examples=25, deadline=None)
@given(N=EVEN_N, seed=SEEDS)
def test_amplitude_matches_the_textbook_formula_and_is_vectorised(N, seed):
    rng = np.random.default_rng(seed)
    patches = _complex(rng, (3, 2, N, N))
    probe = _complex(rng, (N, N))
    reference = np.sqrt(
        np.fft.fftshift(
            np.abs(np.fft.fft2(patches.astype(np.complex128) * probe)) ** 2, axes=(-2, -1)
        )
        / N**2
    )
    amplitude = physics.diffraction_amplitude(patches, probe)
    np.testing.assert_allclose(amplitude, reference, rtol=1e-4, atol=1e-5 * reference.max())
    single = physics.diffraction_amplitude(patches[1, 0], probe)
    np.testing.assert_allclose(amplitude[1, 0], single, rtol=1e-6, atol=1e-7 * single.max())


@pytest.mark.parametrize("N", [2, 8, 64])
def test_flat_field_puts_all_power_on_the_zero_frequency_pixel_at_n_over_2(N):
    value = 0.5 - 1.5j
    amplitude = physics.diffraction_amplitude(np.full((N, N), value, np.complex64), np.ones((N, N)))
    expected = np.zeros((N, N))
    expected[N // 2, N // 2] = N * abs(value)  # |ΣΣ value| / N = N²|value| / N
    np.testing.assert_allclose(amplitude, expected, atol=1e-4 * N)
    assert np.unravel_index(np.argmax(amplitude), amplitude.shape) == (N // 2, N // 2)


def test_a_tilt_of_one_frequency_moves_the_peak_by_one_pixel():
    N = 16
    cols = np.arange(N)
    tilt = np.exp(2j * np.pi * cols / N)[None, :] * np.ones((N, 1))
    amplitude = physics.diffraction_amplitude(tilt.astype(np.complex64), np.ones((N, N)))
    assert np.unravel_index(np.argmax(amplitude), amplitude.shape) == (N // 2, N // 2 + 1)


@pytest.mark.parametrize(
    ("patches", "probe"),
    [
        (np.ones((2, 8, 8)), np.ones((8, 6))),
        (np.ones((2, 8, 8)), np.ones((6, 6))),
        (np.ones(8), np.ones((8, 8))),
    ],
)
def test_diffraction_amplitude_rejects_mismatched_shapes(patches, probe):
    with pytest.raises(ValueError, match="diffraction_amplitude"):
        physics.diffraction_amplitude(patches, probe)


# --------------------------------------------------------------------------- Poisson NLL


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, factor=st.floats(0.2, 5.0).filter(lambda f: abs(f - 1) > 1e-3))
def test_poisson_nll_is_the_mean_partial_nll_and_is_minimal_at_the_counts(seed, factor):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(50.0, size=(4, 6, 6)).astype(np.float64) + 1
    rate = counts * rng.uniform(0.5, 2.0, size=counts.shape)
    expected = np.mean(rate - counts * np.log(rate + 1e-12))
    assert physics.poisson_nll(rate, counts) == pytest.approx(expected, rel=1e-12)
    # For rates proportional to the counts, the minimum is at rate = counts.
    assert physics.poisson_nll(counts, counts) < physics.poisson_nll(factor * counts, counts)


def test_poisson_nll_handles_zero_rate_with_zero_counts_and_rejects_bad_shapes():
    assert physics.poisson_nll(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="equal shape"):
        physics.poisson_nll(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-empty"):
        physics.poisson_nll(np.ones(0), np.ones(0))


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize("N", [32, 64, 128])
def test_default_probe_is_upstreams_soft_disk_of_radius_0_17_n(N):
    probe = physics.default_probe(N)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    assert np.all(probe.imag == 0) and probe.real.min() >= 1e-9
    assert probe.real.max() == pytest.approx(1.0, abs=0.02)
    radius = np.sqrt(np.sum(probe.real > 0.5) / np.pi)
    assert radius == pytest.approx(0.170 * N, rel=0.06)
    rows, cols = np.indices((N, N))
    weight = probe.real.astype(np.float64)
    assert np.sum(rows * weight) / weight.sum() == pytest.approx((N - 1) / 2, abs=1e-6)
    assert np.sum(cols * weight) / weight.sum() == pytest.approx((N - 1) / 2, abs=1e-6)
    # Soft edge from the σ = 1 px blur: values strictly between 0 and 1 exist.
    assert np.any((probe.real > 0.1) & (probe.real < 0.9))


@pytest.mark.parametrize("N", [32, 64, 128])
def test_focused_probe_is_a_compact_structured_complex_probe(N):
    probe = physics.focused_probe(N)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    np.testing.assert_array_equal(probe, physics.focused_probe(N))  # deterministic
    magnitude = np.abs(probe).astype(np.float64)
    assert magnitude.max() == pytest.approx(1.0, rel=1e-6)
    power = magnitude**2
    rows, cols = np.indices((N, N))
    assert np.sum(rows * power) / power.sum() == pytest.approx((N - 1) / 2, abs=1e-3)
    assert np.sum(cols * power) / power.sum() == pytest.approx((N - 1) / 2, abs=1e-3)
    # Main lobe (|P| > max/2) about N/3 across; nearly all power inside r < N/4.
    diameter = 2 * np.sqrt(np.sum(magnitude > 0.5) / np.pi)
    assert N / 4 <= diameter <= N / 2
    radius = np.hypot(rows - (N - 1) / 2, cols - (N - 1) / 2)
    assert power[radius < N / 4].sum() / power.sum() > 0.9
    # Tails that the periodic FFT wraps around stay small at the border.
    border = np.concatenate([magnitude[0], magnitude[-1], magnitude[:, 0], magnitude[:, -1]])
    assert border.max() < 0.05
    # Curved phase: across the main lobe the phase changes by more than half a radian.
    lobe = magnitude > 0.5
    assert np.ptp(np.angle(probe[lobe] / probe[N // 2, N // 2])) > 0.5


def test_focused_probe_parameters_change_it_and_are_checked():
    base = physics.focused_probe(64)
    assert not np.allclose(base, physics.focused_probe(64, defocus=0.0))
    assert not np.allclose(base, physics.focused_probe(64, central_stop=0.3))
    assert not np.allclose(base, physics.focused_probe(64, pupil_radius=12))
    for kwargs in ({"pupil_radius": 0.5}, {"central_stop": 1.0}, {"edge_width": 0.0}):
        with pytest.raises(ValueError, match="focused_probe"):
            physics.focused_probe(64, **kwargs)


# --------------------------------------------------------------------------- output gain


@settings(max_examples=25, deadline=None)
@given(N=st.sampled_from([8, 16, 32, 64]), seed=SEEDS, level=st.floats(0.05, 2.0))
def test_initial_output_gain_puts_a_uniform_object_at_the_data_level(N, seed, level):
    """An object of uniform amplitude ``level`` scaled by g₀ diffracts (N/2)² in total."""
    rng = np.random.default_rng(seed)
    probe = _complex(rng, (N, N)) * (1 + 3 * rng.random())
    gain = physics.initial_output_gain(probe, object_level=level)
    patches = np.full((N, N), gain * level, dtype=np.complex128)
    total = np.sum(physics.diffraction_amplitude(patches, probe.astype(np.complex128)) ** 2)
    np.testing.assert_allclose(total, (N / 2) ** 2, rtol=1e-9)


@pytest.mark.parametrize(
    ("probe", "level", "match"),
    [
        (np.ones((4, 6), np.complex64), 0.5, r"square \(N, N\) probe, found shape \(4, 6\)"),
        (np.zeros((4, 4), np.complex64), 0.5, "finite, non-zero power, found 0.0"),
        (np.ones((4, 4), np.complex64), 0.0, "object_level > 0, found 0.0"),
        (np.ones((4, 4), np.complex64), float("nan"), "object_level > 0, found nan"),
    ],
)
def test_initial_output_gain_rejects_bad_input(probe, level, match):
    with pytest.raises(ValueError, match=match):
        physics.initial_output_gain(probe, object_level=level)

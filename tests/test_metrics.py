"""Quality metrics: ``ptycho_core.metrics`` (scikit-image only as a cross-check)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.signal.windows import tukey
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.registration import phase_cross_correlation

from ptycho_core import metrics
from ptycho_core.metrics import (
    FRC_ONE_SEVENTH,
    PSNR_CAP_DB,
    align,
    evaluate,
    fourier_shift,
    frc,
    frc_resolution,
    half_bit_threshold,
    psnr,
    register_shift,
    ssim,
)
from ptycho_core.simulate import default_dataset

NUMERIC = settings(max_examples=25, deadline=None)
SLOW_NUMERIC = settings(max_examples=8, deadline=None)
SEEDS = st.integers(0, 2**31)


def shapes(rows: tuple[int, int], columns: tuple[int, int]) -> st.SearchStrategy[tuple[int, int]]:
    """An image shape with rows and columns in the given inclusive ranges."""
    return st.tuples(st.integers(*rows), st.integers(*columns))


REQUIRED_KEYS = {
    "amplitude_ssim",
    "phase_ssim",
    "phase_ssim_upstream",
    "amplitude_psnr",
    "phase_psnr",
    "frc_half_bit",
    "frc_1_7",
    "amplitude_mae",
    "phase_mae",
    "shift_px",
}


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std periodic smooth noise (periodic so Fourier shifts are exact)."""
    a = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (a - a.mean()) / a.std()


def _object(seed: int, shape: tuple[int, int] = (96, 96), sigma: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    amplitude = 0.7 + 0.2 * np.tanh(_smooth(rng, shape, sigma))
    phase = 0.8 * _smooth(rng, shape, sigma)
    return amplitude * np.exp(1j * phase)


# ----------------------------------------------------------------------------- SSIM / PSNR


@NUMERIC
@given(
    shape=shapes((7, 40), (7, 40)),
    noise=st.floats(0.0, 2.0),
    data_range=st.floats(0.1, 10.0),
    seed=SEEDS,
)
def test_ssim_matches_skimage(shape, noise, data_range, seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, shape)
    b = a + noise * rng.standard_normal(shape)
    want = structural_similarity(a, b, win_size=7, data_range=data_range)
    assert ssim(a, b, data_range) == pytest.approx(want, rel=1e-10, abs=1e-12)


@NUMERIC
@given(shape=shapes((1, 30), (2, 30)), noise=st.floats(1e-3, 2.0), seed=SEEDS)
def test_psnr_matches_skimage_with_the_ground_truth_range(shape, noise, seed):
    rng = np.random.default_rng(seed)
    ref = rng.uniform(-1, 3, shape)
    ref.flat[0], ref.flat[-1] = -1.0, 3.0  # a known range of 4
    test = ref + noise * rng.standard_normal(shape)
    want = peak_signal_noise_ratio(ref, test, data_range=4.0)
    assert psnr(ref, test) == pytest.approx(want, rel=1e-12)
    assert psnr(ref, test, data_range=2.0) == pytest.approx(want - 20 * np.log10(2), rel=1e-12)


def test_identical_images_give_ssim_one_and_psnr_inf():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (20, 20))
    assert ssim(a, a, 1.0) == pytest.approx(1.0, abs=1e-12)
    assert psnr(a, a) == math.inf


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ssim(np.ones((6, 9)), np.ones((6, 9)), 1.0), "at least 7"),
        (lambda: ssim(np.ones((9, 9)), np.ones((9, 8)), 1.0), "same shape"),
        (lambda: ssim(np.ones((9, 9)), np.ones((9, 9)), 0.0), "data_range"),
        (lambda: ssim(np.ones((9, 9)) * 1j, np.ones((9, 9)), 1.0), "real"),
        (lambda: psnr(np.ones((4, 4)), np.ones((4, 4))), "data_range"),
        (lambda: psnr(np.ones(4), np.ones(4), 1.0), "2-D"),
    ],
)
def test_ssim_psnr_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- registration


def test_fourier_shift_moves_content_by_plus_dy_dx():
    img = np.zeros((16, 20))
    img[3, 4] = 1.0
    out = fourier_shift(img, 2, -3)
    assert np.unravel_index(np.argmax(out), out.shape) == (5, 1)
    np.testing.assert_allclose(out, np.roll(img, (2, -3), axis=(0, 1)), atol=1e-12)
    assert out.dtype == np.float64
    # A real image gives the real part of the complex shift (the Nyquist term is not real).
    np.testing.assert_allclose(
        fourier_shift(img, 1.5, 0.25), fourier_shift(img + 0j, 1.5, 0.25).real, atol=1e-15
    )


@NUMERIC
@given(
    dy=st.floats(-4, 4),
    dx=st.floats(-4, 4),
    seed=SEEDS,
)
def test_register_shift_recovers_a_known_sub_pixel_shift(dy, dx, seed):
    rng = np.random.default_rng(seed)
    real = _smooth(rng, (64, 64), 1.5)
    moved = fourier_shift(real, dy, dx)
    est = register_shift(real, moved)
    assert est == pytest.approx((-dy, -dx), abs=0.05)  # shifting back registers
    # Same algorithm and convention as scikit-image's phase_cross_correlation.
    sk = phase_cross_correlation(real, moved, upsample_factor=50)[0]
    np.testing.assert_allclose(est, sk, atol=1e-9)
    # Complex images register on their phasors.
    obj = _object(seed, (64, 64), 1.5)
    est_c = register_shift(obj, fourier_shift(obj, dy, dx))
    assert est_c == pytest.approx((-dy, -dx), abs=0.05)


def test_register_shift_uses_amplitude_when_the_phase_is_flat():
    rng = np.random.default_rng(2)
    amp = (1.0 + 0.2 * np.tanh(_smooth(rng, (48, 48), 1.5))).astype(np.complex128)
    assert register_shift(amp, fourier_shift(amp, 0.4, -1.3)) == pytest.approx(
        (-0.4, 1.3), abs=0.05
    )


def test_register_shift_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        register_shift(np.ones((8, 8)), np.ones((8, 9)))
    with pytest.raises(ValueError, match="upsample_factor"):
        register_shift(np.ones((8, 8)), np.ones((8, 8)), upsample_factor=0)
    with pytest.raises(ValueError, match="normalization"):
        register_shift(np.ones((8, 8)), np.ones((8, 8)), normalization="energy")


# ----------------------------------------------------------------------------- FRC


def test_frc_of_identical_images_is_one():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 64)) + 1j * rng.standard_normal((64, 64))
    freqs, curve, counts = frc(a, a)
    assert freqs[0] == 0 and freqs[-1] == pytest.approx(0.5)
    assert curve.shape == freqs.shape == counts.shape == (33,)
    np.testing.assert_allclose(curve, 1.0, atol=1e-12)
    assert counts[0] == 1 and counts.sum() <= 64 * 64
    assert frc_resolution(freqs, curve, FRC_ONE_SEVENTH) == 2.0  # never crosses: Nyquist


def test_frc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 128, 128))
    freqs, curve, counts = frc(a, b)
    # |FRC| of independent rings scales as 1/sqrt(n); check the rings with many pixels.
    many = counts >= 50
    assert np.mean(curve[many]) < 0.1
    assert np.all(curve[many] < 6 / np.sqrt(counts[many]))
    half_bit = frc_resolution(freqs, curve, half_bit_threshold(counts))
    assert half_bit > 20  # crosses at the lowest rings


def test_frc_falls_with_noise_and_the_resolution_follows():
    obj = _object(3, (96, 96), 2.0)
    rng = np.random.default_rng(4)
    noisy = obj + 1.0 * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))
    f, clean_curve, _ = frc(obj, obj + 0.02 * rng.standard_normal(obj.shape))
    _, noisy_curve, _ = frc(obj, noisy)
    assert np.mean(noisy_curve) < np.mean(clean_curve)
    assert frc_resolution(f, noisy_curve, FRC_ONE_SEVENTH) > frc_resolution(
        f, clean_curve, FRC_ONE_SEVENTH
    )


def test_frc_resolution_interpolates_the_first_crossing():
    f = np.arange(11) / 20.0  # L = 20
    curve = np.array([1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.5, 0.05, 0.0, 0.0, 0.0])
    # 0.3 → 0.1 crosses 0.143 at ring 4 + (0.3 − 0.143)/(0.3 − 0.1) = 4.785
    assert frc_resolution(f, curve, 0.143) == pytest.approx(20 / 4.785, rel=1e-12)
    thresholds = np.full(11, 0.6)
    assert frc_resolution(f, curve, thresholds) == pytest.approx(20 / 2.5, rel=1e-12)
    assert frc_resolution(f, np.ones(11), 0.143) == 2.0
    with pytest.raises(ValueError, match="equal length"):
        frc_resolution(f, curve[:-1], 0.5)


@NUMERIC
@given(n=st.integers(1, 200), alpha=st.just(0.0) | st.floats(1e-3, 1.0))
def test_tukey_taper_matches_scipy(n, alpha):
    np.testing.assert_allclose(metrics._tukey(n, alpha), tukey(n, alpha, sym=True), atol=1e-12)


def test_half_bit_threshold_matches_van_heel_and_schatz():
    n = np.array([1.0, 100.0, 1e12])
    want = (0.2071 + 1.9102 / np.sqrt(n)) / (1.2071 + 0.9102 / np.sqrt(n))
    np.testing.assert_allclose(half_bit_threshold(n), want, rtol=1e-12)
    assert half_bit_threshold(np.array([1e12]))[0] == pytest.approx(0.2071 / 1.2071, rel=1e-5)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_identical_is_perfect_and_json_safe():
    obj = _object(0)
    r = evaluate(obj, obj)
    assert r.keys() >= REQUIRED_KEYS
    assert all(isinstance(v, float) and math.isfinite(v) for v in r.values())
    json.dumps(r, allow_nan=False)
    assert r["amplitude_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert r["phase_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert r["phase_ssim_upstream"] == pytest.approx(1.0, abs=1e-9)
    assert r["amplitude_psnr"] == PSNR_CAP_DB and r["phase_psnr"] == PSNR_CAP_DB
    assert r["amplitude_mae"] < 1e-12 and r["phase_mae"] < 1e-12
    assert r["frc_half_bit"] == 2.0 and r["frc_1_7"] == 2.0
    assert r["shift_px"] == 0.0


@SLOW_NUMERIC
@given(
    offset=st.floats(-np.pi, np.pi),
    gy=st.floats(-6.0, 6.0),
    gx=st.floats(-6.0, 6.0),
    scale=st.floats(0.2, 5.0),
    seed=SEEDS,
)
def test_evaluate_ignores_phase_offset_ramp_and_amplitude_scale(offset, gy, gx, scale, seed):
    # gy, gx: ramp cycles across the image; several cycles wrap arg() many times.
    obj = _object(seed, (72, 72))
    rr, cc = np.mgrid[0:72, 0:72] / 72
    rec = scale * obj * np.exp(1j * (offset + 2 * np.pi * (gy * rr + gx * cc)))
    r = evaluate(rec, obj)
    assert r["amplitude_ssim"] > 1 - 1e-9 and r["phase_ssim"] > 1 - 1e-9
    assert r["phase_ssim_upstream"] > 1 - 1e-9
    assert r["amplitude_mae"] < 1e-9 and r["phase_mae"] < 1e-9
    assert r["shift_px"] == 0.0
    assert r["amplitude_scale"] == pytest.approx(1 / scale, rel=1e-9)


@SLOW_NUMERIC
@given(dy=st.floats(-3.0, 3.0), dx=st.floats(-3.0, 3.0), seed=SEEDS)
def test_evaluate_ignores_a_sub_pixel_shift_of_a_smooth_object(dy, dx, seed):
    obj = _object(seed, (96, 96), 2.0)
    r = evaluate(fourier_shift(obj, dy, dx), obj)
    assert r["shift_dy"] == pytest.approx(-dy, abs=0.05)
    assert r["shift_dx"] == pytest.approx(-dx, abs=0.05)
    assert r["shift_px"] == pytest.approx(math.hypot(dy, dx), abs=0.07)
    # Fourier-shifting the non-periodic crop back leaves small edge errors only.
    assert r["amplitude_ssim"] > 0.98 and r["phase_ssim"] > 0.99
    assert r["phase_ssim_upstream"] > 0.99
    assert r["phase_mae"] < 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_registers_a_smooth_object_inside_a_mask(seed):
    # Plain phase correlation of two equal crops locks onto the crop edges for smooth
    # objects (register_shift on the two crops returns ≈ (0, 0) here); the masked
    # correlation against the surrounding reconstruction does not.
    obj = _object(seed, (128, 128), 6.0)
    rec = fourier_shift(obj, 0.35, -0.6)
    mask = np.zeros(obj.shape, bool)
    mask[20:100, 30:110] = True
    r = evaluate(np.where(mask, rec, 0), obj, mask=mask, border=4)
    assert r["shift_dy"] == pytest.approx(-0.35, abs=0.05)
    assert r["shift_dx"] == pytest.approx(0.6, abs=0.05)


def test_degraded_reconstruction_scores_worse():
    obj = _object(5, (96, 96), 1.5)
    rng = np.random.default_rng(6)

    def noisy(level: float) -> np.ndarray:
        return obj + level * (rng.standard_normal(obj.shape) + 1j * rng.standard_normal(obj.shape))

    good = evaluate(noisy(0.01), obj)
    bad = evaluate(noisy(0.15), obj)
    blurred = evaluate(
        ndimage.gaussian_filter(obj.real, 2) + 1j * ndimage.gaussian_filter(obj.imag, 2), obj
    )
    for worse in (bad, blurred):
        assert worse["amplitude_ssim"] < good["amplitude_ssim"]
        assert worse["phase_ssim"] < good["phase_ssim"]
        assert worse["phase_ssim_upstream"] < good["phase_ssim_upstream"]
        assert worse["amplitude_psnr"] < good["amplitude_psnr"]
        assert worse["phase_psnr"] < good["phase_psnr"]
        assert worse["amplitude_mae"] > good["amplitude_mae"]
        assert worse["phase_mae"] > good["phase_mae"]
        assert worse["frc_1_7"] > good["frc_1_7"]
        assert worse["frc_half_bit"] > good["frc_half_bit"]


def test_evaluate_uses_only_the_masked_region():
    obj = _object(7, (96, 96))
    rr, cc = np.mgrid[0:96, 0:96]
    mask = (np.abs(rr - 48) < 30) & (np.abs(cc - 50) < 35)
    rec = np.where(mask, obj * np.exp(0.7j), 0)  # uncovered pixels are 0, as stitched
    r = evaluate(rec, obj, mask=mask)
    assert r["amplitude_ssim"] > 1 - 1e-9 and r["phase_ssim"] > 1 - 1e-9
    assert r["phase_ssim_upstream"] > 1 - 1e-9
    assert r["n_pixels"] == (59 - 2 * 2) * (69 - 2 * 2)  # minus the 2 px border
    rec_a, gt_c = align(rec, obj, mask)
    assert rec_a.shape == gt_c.shape == (55, 65)
    assert np.all(np.abs(rec_a) > 0)
    # Without the mask the zeros are compared too, and the scores collapse.
    assert evaluate(rec, obj)["amplitude_ssim"] < 0.9


def test_align_keeps_the_largest_rectangle_of_a_round_mask():
    rr, cc = np.mgrid[0:80, 0:80]
    mask = (rr - 40) ** 2 + (cc - 40) ** 2 < 35**2
    rows, cols = metrics._largest_rectangle(mask)
    assert mask[rows, cols].all()
    assert (rows.stop - rows.start) * (cols.stop - cols.start) > 0.5 * 70 * 70


def test_evaluate_of_a_phase_only_object_has_finite_amplitude_scores():
    rng = np.random.default_rng(8)
    obj = np.exp(1j * _smooth(rng, (64, 64), 2.0))
    r = evaluate(obj * np.exp(0.3j), obj)
    assert all(math.isfinite(v) for v in r.values())
    assert r["amplitude_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert r["phase_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert r["phase_ssim_upstream"] == pytest.approx(1.0, abs=1e-9)


def test_phase_ssim_scores_a_flat_phase_low_where_upstreams_convention_does_not():
    # The default test object's phase spans ≈ 1.5 rad: with data range 1 on (φ + π)/2π
    # (upstream), a reconstruction without any phase still scores ≈ 0.85; with the
    # object's own phase range as data range it scores near 0.
    truth = default_dataset("test").object.astype(np.complex128)
    flat = evaluate(np.abs(truth).astype(np.complex128), truth)
    assert flat["phase_ssim_upstream"] > 0.8
    assert flat["phase_ssim"] < 0.2
    # Both conventions still rank a partial phase recovery above the flat phase.
    half = evaluate(np.abs(truth) * np.exp(0.5j * np.angle(truth)), truth)
    assert half["phase_ssim"] > flat["phase_ssim"] + 0.3
    assert half["phase_ssim_upstream"] > flat["phase_ssim_upstream"]


@NUMERIC
@given(
    shape=shapes((20, 40), (20, 40)),
    phase_range=st.floats(0.05, 6.0),
    noise=st.floats(0.0, 2.0),
    seed=SEEDS,
)
def test_phase_ssim_is_skimage_ssim_of_the_aligned_phases(shape, phase_range, noise, seed):
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.0, shape)
    phase = phase_range * rng.uniform(-0.5, 0.5, shape)
    truth = amplitude * np.exp(1j * phase)
    rec = amplitude * np.exp(1j * (phase + noise * rng.standard_normal(shape)))
    r = evaluate(rec, truth, max_shift=0.0)
    rec_a, gt_c = align(rec, truth, max_shift=0.0)
    phi_g = np.angle(gt_c)
    phi_r = phi_g + np.angle(rec_a * np.conj(gt_c))  # unwrapped around the truth
    R = float(phi_g.max() - phi_g.min())
    want = structural_similarity(phi_r, phi_g, win_size=7, data_range=R)
    assert r["phase_ssim"] == pytest.approx(want, rel=1e-9, abs=1e-12)
    upstream = structural_similarity(
        (phi_r + np.pi) / (2 * np.pi), (phi_g + np.pi) / (2 * np.pi), win_size=7, data_range=1.0
    )
    assert r["phase_ssim_upstream"] == pytest.approx(upstream, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"reconstruction": np.ones((20, 21), complex)}, "same shape"),
        ({"mask": np.ones((5, 5), bool)}, "mask"),
        ({"mask": np.zeros((20, 20), bool)}, "no pixels"),
        ({"mask": np.pad(np.ones((10, 18), bool), ((5, 5), (1, 1)))}, "at least 16×16"),
        ({"border": -1}, "border"),
        ({"reconstruction": np.full((20, 20), np.nan + 0j)}, "finite"),
    ],
)
def test_align_rejects_bad_input(kwargs, match):
    args = {"reconstruction": np.ones((20, 20), complex), "ground_truth": np.ones((20, 20))}
    args.update(kwargs)
    rec, gt = args.pop("reconstruction"), args.pop("ground_truth")
    with pytest.raises(ValueError, match=match):
        align(rec, gt, **args)

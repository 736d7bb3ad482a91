"""Synthetic data (specs/data-contract.md §7): determinism, physics, geometry, defaults."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from ptycho_core import physics
from ptycho_core.data import load_npz, save_npz
from ptycho_core.geometry import extract_patches
from ptycho_core.simulate import (
    SimulationConfig,
    default_dataset,
    default_simulation_config,
    make_object,
    scan_positions,
    simulate,
)

SMALL = SimulationConfig(N=32, n_positions=40, step=4.0, seed=3)


def nearest_neighbour_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    points = np.column_stack([x, y])
    distances, _ = cKDTree(points).query(points, k=2)
    return distances[:, 1]


@pytest.fixture(scope="module")
def train():
    return default_dataset("train")


@pytest.fixture(scope="module")
def test_split():
    return default_dataset("test")


# --------------------------------------------------------------------------- config


def test_config_round_trips_through_dict_and_json():
    config = SimulationConfig(object_kind="blobs", scan_kind="raster", jitter=0.5, seed=9)
    assert SimulationConfig.from_dict(config.to_dict()) == config
    assert SimulationConfig.from_json(config.to_json()) == config
    assert set(SimulationConfig.field_docs()) == {f.name for f in dataclasses.fields(config)}
    assert all(SimulationConfig.field_docs().values())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"N": 63}, "N"),
        ({"N": 2}, "N"),
        ({"N": 64.0}, "N"),
        ({"object_kind": "cat"}, "object_kind"),
        ({"probe_kind": "gaussian"}, "probe_kind"),
        ({"scan_kind": "spiral"}, "scan_kind"),
        ({"phase_kind": "random"}, "phase_kind"),
        ({"phase_max": 4.0}, "phase_max"),
        ({"n_positions": 0}, "n_positions"),
        ({"step": 0.0}, "step"),
        ({"jitter": -1.0}, "jitter"),
        ({"nphotons": 0.0}, "nphotons"),
        ({"nphotons": float("inf")}, "nphotons"),
        ({"seed": -1}, "seed"),
        ({"seed": True}, "seed"),
        ({"amplitude_min": 0.6, "amplitude_max": 0.5}, "amplitude_max"),
        ({"object_size": 3}, "object_size"),
        ({"object_size": 100}, "object_size"),  # too small for 512 positions at N = 64
    ],
)
def test_bad_config_values_raise_value_error_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=rf"SimulationConfig\.{field}: expected"):
        SimulationConfig(**changes)


def test_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="unknown field"):
        SimulationConfig.from_dict({"photons": 1e6})


def test_simulate_needs_a_config():
    with pytest.raises(TypeError, match="SimulationConfig"):
        simulate({"N": 32})


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_bit_identical_data():
    a, b = simulate(SMALL), simulate(SMALL)
    for field in ("diffraction", "xcoords", "ycoords", "probe", "object", "scan_index"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_different_seeds_give_different_objects_and_noise():
    a, b = simulate(SMALL), simulate(SMALL.replace(seed=4))
    assert a.object.shape == b.object.shape
    assert not np.allclose(a.object, b.object)
    assert not np.allclose(a.diffraction, b.diffraction)
    np.testing.assert_array_equal(a.probe, b.probe)  # the probe is deterministic


def test_jitter_and_dose_do_not_redraw_the_object_of_a_fixed_size():
    fixed = SMALL.replace(object_size=120)
    plain = simulate(fixed)
    np.testing.assert_array_equal(plain.object, simulate(fixed.replace(nphotons=1e5)).object)
    jittered = simulate(fixed.replace(jitter=0.7))
    np.testing.assert_array_equal(plain.object, jittered.object)
    shift = np.hypot(plain.xcoords - jittered.xcoords, plain.ycoords - jittered.ycoords)
    assert 0.2 < np.median(shift) < 2.0


# --------------------------------------------------------------------------- physics


def test_mean_counts_per_pattern_equal_nphotons_and_amplitudes_are_sqrt_counts():
    for nphotons in (1e4, 1e9):
        data = simulate(SMALL.replace(nphotons=nphotons))
        counts = data.diffraction.astype(np.float64) ** 2
        assert data.diffraction.dtype == np.float32
        np.testing.assert_allclose(counts, np.rint(counts), atol=1e-6 * counts.max() + 1e-3)
        assert counts.sum(axis=(1, 2)).mean() == pytest.approx(nphotons, rel=5 * nphotons**-0.5)


def test_patterns_follow_the_reference_forward_model():
    """Counts ≈ scale · A(O_k · P)² with one scale for all patterns (Poisson at 1e10 photons)."""
    config = SMALL.replace(nphotons=1e10)
    data = simulate(config)
    patches = extract_patches(data.object, data.xcoords, data.ycoords, config.N)
    expected = physics.diffraction_amplitude(patches, data.probe).astype(np.float64) ** 2
    counts = data.diffraction.astype(np.float64) ** 2
    scale = config.nphotons / expected.sum(axis=(1, 2)).mean()
    # Totals per pattern: Poisson relative noise 1/sqrt(1e10) = 1e-5.
    np.testing.assert_allclose(
        counts.sum(axis=(1, 2)), scale * expected.sum(axis=(1, 2)), rtol=2e-4
    )
    bright = expected > 1e-3 * expected.max()
    np.testing.assert_allclose(counts[bright], scale * expected[bright], rtol=0.02)
    # Centring: the mean pattern's centroid is the zero-frequency pixel (N/2, N/2).
    mean_pattern = counts.mean(axis=0)
    rows, cols = np.indices(mean_pattern.shape)
    assert np.sum(rows * mean_pattern) / mean_pattern.sum() == pytest.approx(16, abs=0.3)
    assert np.sum(cols * mean_pattern) / mean_pattern.sum() == pytest.approx(16, abs=0.3)


def test_low_dose_data_is_noisy_integer_counts():
    data = simulate(SMALL.replace(nphotons=1e3))
    counts = np.rint(data.diffraction.astype(np.float64) ** 2)
    assert np.mean(counts == 0) > 0.5  # most pixels see no photon at 1e3 photons per pattern


# --------------------------------------------------------------------------- geometry


@settings(max_examples=12, deadline=None)
@given(
    N=st.sampled_from([8, 16, 32]),
    n=st.integers(1, 60),
    scan=st.sampled_from(["fermat", "raster"]),
    step=st.floats(1.0, 12.0),
    jitter=st.sampled_from([0.0, 0.5, 3.0]),
    seed=st.integers(0, 1000),
)
def test_every_patch_lies_inside_the_object(N, n, scan, step, jitter, seed):
    config = SimulationConfig(
        N=N, n_positions=n, scan_kind=scan, step=step, jitter=jitter, seed=seed
    )
    size = config.resolved_object_size
    x, y = scan_positions(config, np.random.default_rng(seed))
    assert x.shape == y.shape == (n,)
    for v in (x, y):
        assert np.all(v >= N / 2) and np.all(v <= size - 1 - N / 2)
    obj = make_object(config, np.random.default_rng(seed))
    assert obj.shape == (size, size)
    # A patch fully inside an object with amplitude >= amplitude_min has no zero fill.
    patches = extract_patches(obj, x, y, N)
    assert np.abs(patches).min() >= config.amplitude_min * 0.999


def test_fermat_scan_has_the_requested_neighbour_spacing_and_sub_pixel_positions():
    config = SimulationConfig(n_positions=300, step=6.0)
    x, y = scan_positions(config)
    distances = nearest_neighbour_distances(x, y)
    assert np.median(distances) == pytest.approx(6.0, rel=0.03)
    assert distances.min() > 0.85 * 6.0 and distances.max() < 1.1 * 6.0
    assert np.mean(np.abs(x - np.rint(x)) > 1e-3) > 0.9
    centre = (config.resolved_object_size - 1) / 2
    assert abs(np.mean(x) - centre) < 3 and abs(np.mean(y) - centre) < 3


def test_raster_scan_is_a_centred_grid_of_pitch_step():
    config = SimulationConfig(N=16, n_positions=12, scan_kind="raster", step=5.0)
    x, y = scan_positions(config)
    assert sorted(set(np.round(np.diff(np.unique(x)), 9))) == [5.0]
    assert sorted(set(np.round(np.diff(np.unique(y)), 9))) == [5.0]
    assert len(np.unique(x)) == 4 and len(np.unique(y)) == 3
    centre = (config.resolved_object_size - 1) / 2
    assert np.mean(np.unique(x)) == pytest.approx(centre)
    assert np.mean(np.unique(y)) == pytest.approx(centre)


def test_jittered_scan_needs_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        scan_positions(SMALL.replace(jitter=1.0))


def test_an_explicit_object_size_is_used():
    data = simulate(SMALL.replace(object_size=101))
    assert data.object.shape == (101, 101)


# --------------------------------------------------------------------------- objects and probes


def test_object_amplitude_and_phase_ranges():
    config = SMALL.replace(amplitude_min=0.2, amplitude_max=0.9)
    obj = make_object(config, np.random.default_rng(0))
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert obj.dtype == np.complex64
    assert amplitude.min() == pytest.approx(0.2, abs=1e-5)
    assert amplitude.max() == pytest.approx(0.9, abs=1e-5)
    assert np.all(np.abs(phase) <= config.phase_max + 1e-6)
    assert phase.std() > 0.1  # non-trivial phase
    flat = make_object(config.replace(phase_kind="none"), np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(flat), amplitude, rtol=1e-6)
    assert np.all(flat.imag == 0)


def test_phase_kinds_and_object_kinds_differ():
    rng = np.random.default_rng
    tanh = make_object(SMALL, rng(0))
    independent = make_object(SMALL.replace(phase_kind="independent"), rng(0))
    np.testing.assert_allclose(np.abs(tanh), np.abs(independent), rtol=1e-6)
    assert not np.allclose(np.angle(tanh), np.angle(independent), atol=0.05)
    # 'tanh' phase is a monotone function of the amplitude; 'independent' is not.
    order = np.argsort(np.abs(tanh).ravel())
    assert np.all(np.diff(np.angle(tanh).ravel()[order]) >= -1e-5)
    assert np.any(np.diff(np.angle(independent).ravel()[order]) < -0.05)
    blobs = make_object(SMALL.replace(object_kind="blobs"), rng(0))
    assert blobs.shape == tanh.shape and not np.allclose(blobs, tanh)


def test_probe_kinds_use_the_physics_probes():
    np.testing.assert_array_equal(simulate(SMALL).probe, physics.focused_probe(32))
    default = simulate(SMALL.replace(probe_kind="default"))
    np.testing.assert_array_equal(default.probe, physics.default_probe(32))


# --------------------------------------------------------------------------- files


def test_simulated_data_survives_save_and_load(tmp_path):
    data = simulate(SMALL.replace(scan_kind="raster", jitter=0.3))
    path = tmp_path / "sim.npz"
    save_npz(data, path)
    loaded = load_npz(path)
    for field in ("diffraction", "xcoords", "ycoords", "probe", "object", "scan_index"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(data, field))


# --------------------------------------------------------------------------- default dataset


def test_default_dataset_shapes_and_conventions(train, test_split):
    assert train.diffraction.shape == (512, 64, 64) and train.object.shape == (256, 256)
    assert test_split.diffraction.shape == (256, 64, 64)
    assert train.diffraction.dtype == np.float32 and train.probe.dtype == np.complex64
    assert np.all(train.scan_index == 0)
    np.testing.assert_array_equal(train.probe, test_split.probe)
    # Complex object with non-trivial amplitude and phase.
    assert np.abs(train.object).std() > 0.1 and np.angle(train.object).std() > 0.1
    counts = train.diffraction.astype(np.float64) ** 2
    assert counts.sum(axis=(1, 2)).mean() == pytest.approx(1e9, rel=1e-4)


def test_default_train_and_test_objects_differ(train, test_split):
    h, w = test_split.object.shape
    assert not np.allclose(train.object[:h, :w], test_split.object, atol=0.05)
    corr = np.corrcoef(np.abs(train.object[:h, :w]).ravel(), np.abs(test_split.object).ravel())
    assert abs(corr[0, 1]) < 0.3
    # Same seed argument, still different objects.
    assert (
        default_simulation_config("train", seed=5).seed
        != default_simulation_config("test", seed=5).seed
    )


def test_default_scan_overlap_and_step(train):
    distances = nearest_neighbour_distances(train.xcoords, train.ycoords)
    assert distances.max() < 20  # below the stitching crop M = 20
    assert 6.0 < np.median(distances) < 8.0
    # Overlap 1 − step / D with D the probe's main-lobe diameter (|P| > max/2).
    diameter = 2 * math.sqrt(np.sum(np.abs(train.probe) > 0.5) / math.pi)
    assert 1 - np.median(distances) / diameter >= 0.65
    size = train.object.shape[0]
    for v in (train.xcoords, train.ycoords):
        assert v.min() >= 32 and v.max() <= size - 1 - 32


def test_default_dataset_is_deterministic_and_seeded():
    a = default_dataset("test", n_positions=20, N=32)
    b = default_dataset("test", n_positions=20, N=32)
    c = default_dataset("test", n_positions=20, N=32, seed=1)
    np.testing.assert_array_equal(a.diffraction, b.diffraction)
    assert not np.allclose(a.object, c.object)
    assert a.N == 32 and a.n_positions == 20


@pytest.mark.parametrize(("kwargs", "match"), [({"split": "val"}, "split"), ({"seed": -1}, "seed")])
def test_default_dataset_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        default_dataset(**kwargs)


def test_several_objects_share_probe_and_scan_and_are_told_apart():
    one = simulate(SMALL)
    three = simulate(SMALL.replace(n_objects=3))
    size = one.object.shape[0]
    pitch = size + SMALL.N
    assert three.object.shape == (size, 3 * pitch - SMALL.N)
    np.testing.assert_array_equal(three.scan_index, np.repeat([0, 1, 2], SMALL.n_positions))
    np.testing.assert_array_equal(three.probe, one.probe)
    # Object 0 is the single-object config's object; the others are new draws.
    np.testing.assert_array_equal(three.object[:, :size], one.object)
    assert not np.allclose(three.object[:, pitch : pitch + size], one.object)
    np.testing.assert_array_equal(three.object[:, size:pitch], 0)  # the gap between objects
    for k in range(3):
        rows = three.scan_index == k
        np.testing.assert_allclose(three.xcoords[rows] - k * pitch, one.xcoords)
        np.testing.assert_allclose(three.ycoords[rows], one.ycoords)
    # Each pattern is the diffraction of its own object (noise-free comparison up to scale).
    k = 2
    rows = np.flatnonzero(three.scan_index == k)[:5]
    patches = extract_patches(three.object, three.xcoords[rows], three.ycoords[rows], SMALL.N)
    model = physics.diffraction_amplitude(patches, three.probe) ** 2
    measured = three.diffraction[rows].astype(np.float64) ** 2
    ratio = measured.sum() / model.sum()
    assert np.corrcoef(measured.ravel(), ratio * model.ravel())[0, 1] > 0.99


def test_too_many_objects_are_refused():
    with pytest.raises(ValueError, match=r"SimulationConfig\.n_objects"):
        SMALL.replace(n_objects=10_000)

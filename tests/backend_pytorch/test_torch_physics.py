"""The torch physics against the numpy references of ptycho_core (geometry and physics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ptycho_core import geometry
from ptycho_core import physics as core_physics
from ptycho_core.config import ModelConfig
from ptycho_torch import physics
from ptycho_torch.training import build_network

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
    found = physics.translate(
        torch.from_numpy(image)[None], torch.tensor([dx]), torch.tensor([dy])
    ).numpy()[0]
    np.testing.assert_allclose(found, expected, atol=1e-5, rtol=0)


def test_translate_moves_an_off_centre_delta_by_plus_dx_columns_and_plus_dy_rows() -> None:
    image = np.zeros((3, 24, 30), dtype=np.float32)
    image[:, 5, 7] = 1.0
    dx = torch.tensor([3.0, -4.0, 2.5])
    dy = torch.tensor([2.0, 6.0, -0.5])
    out = physics.translate(torch.from_numpy(image), dx, dy).numpy()
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
    out = physics.translate(
        torch.from_numpy(image)[None], torch.tensor([1.25]), torch.tensor([-2.5])
    )
    ref = geometry.translate(image, 1.25, -2.5)
    np.testing.assert_allclose(out.numpy()[0], ref, atol=1e-5)
    with pytest.raises(ValueError, match=r"expected images of shape \(M, H, W\)"):
        physics.translate(torch.zeros(16, 16), torch.zeros(1), torch.zeros(1))


def test_extract_patches_sees_the_object_at_each_position() -> None:
    """Canvas pixel (pad + N/2) is the group centre; channel c is seen at centre − δ_c."""
    rng = np.random.default_rng(5)
    N, P = 64, 78
    canvas = (rng.standard_normal((P, P)) + 1j * rng.standard_normal((P, P))).astype(np.complex64)
    offsets = torch.tensor([[[1.5, -2.25], [0.0, 0.0], [-3.0, 4.75], [2.0, 2.0]]])
    patches = physics.extract_patches(torch.from_numpy(canvas)[None, None], offsets, N).numpy()[0]
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
    # only the central N/2 box of every patch is trusted by the merge normaliser
    inner = np.zeros((N, N), dtype=bool)
    inner[N // 4 : 3 * N // 4, N // 4 : 3 * N // 4] = True
    offsets = torch.from_numpy(-positions[None].astype(np.float32))  # coords_relative sign
    canvas = physics.merge_patches(torch.from_numpy(patches * inner)[None], offsets, P).numpy()[
        0, 0
    ]
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
    torch.manual_seed(0)
    patches = torch.complex(torch.randn(8, 4, 64, 64) * 1e3, torch.randn(8, 4, 64, 64) * 1e3)
    offsets = (torch.rand(8, 4, 2) - 0.5) * 14
    canvas = physics.merge_patches(patches, offsets, 78)
    assert canvas.shape == (8, 1, 78, 78)
    assert torch.isfinite(torch.view_as_real(canvas)).all()
    corner = canvas[:, 0, 0, 0]
    expected = patches[:, :, 0, 0].sum(dim=1) / physics.MERGE_EPSILON
    raw_corner = physics.merge_patches(patches, torch.zeros(8, 4, 2), 78)[:, 0, 7, 7]
    assert torch.allclose(raw_corner, expected, rtol=1e-4)
    assert torch.isfinite(torch.view_as_real(corner)).all()


def test_diffract_equals_the_core_forward_model() -> None:
    rng = np.random.default_rng(2)
    N = 64
    probe = core_physics.normalize_probe(core_physics.focused_probe(N), 4.0)
    patches = (rng.random((5, N, N)) * np.exp(1j * rng.standard_normal((5, N, N)))).astype(
        np.complex64
    )
    expected = core_physics.diffraction_amplitude(patches, probe)
    found = physics.diffract(torch.from_numpy(patches) * torch.from_numpy(probe)).numpy()
    np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5 * expected.max())
    # zero frequency at (N/2, N/2) and Parseval: Σ A² = Σ |ψ|²
    flat = physics.diffract(torch.ones(1, N, N, dtype=torch.complex64)).numpy()[0]
    assert flat[N // 2, N // 2] == pytest.approx(N) and flat.sum() == pytest.approx(N)


def test_network_amplitude_is_s0_g_times_the_core_diffraction_of_its_object() -> None:
    """The whole training path for gridsize 1: merge, extract, illuminate, diffract, scale."""
    torch.manual_seed(4)
    N = 64
    probe = core_physics.normalize_probe(core_physics.default_probe(N), 4.0)
    network = build_network(ModelConfig(N=N, gridsize=1), probe, 988.2)
    with torch.no_grad():
        network.log_gain.fill_(0.3)
    x = torch.rand(2, N, N, 1).permute(0, 3, 1, 2)
    out = network(x, torch.zeros(2, 1, 2, 1))
    obj = out.object.detach().numpy()[:, 0]
    expected = 988.2 * np.exp(0.3) * core_physics.diffraction_amplitude(obj, probe)
    found = out.amplitude.detach().numpy()[:, 0]
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_gridsize_two_amplitudes_come_from_the_patches_at_each_position() -> None:
    torch.manual_seed(6)
    N = 64
    probe = core_physics.normalize_probe(core_physics.default_probe(N), 4.0)
    config = ModelConfig(N=N, gridsize=2)
    network = build_network(config, probe, 31.25)
    x = torch.rand(1, N, N, 4).permute(0, 3, 1, 2)
    coords = torch.tensor([[[[3.0, -3.0, 3.0, -3.0], [3.0, 3.0, -3.0, -3.0]]]])
    out = network(x, coords)
    amp, phase = network.generate(x)
    obj = torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))
    offsets = network.offsets(coords)
    canvas = physics.merge_patches(obj.detach(), offsets, config.canvas_size).numpy()[0, 0]
    centre = physics.canvas_padding(N, config.canvas_size) + N / 2
    xs = centre - offsets[0, :, 0].numpy()
    ys = centre - offsets[0, :, 1].numpy()
    patches = geometry.extract_patches(canvas, xs, ys, N)
    expected = 31.25 * network.output_gain * core_physics.diffraction_amplitude(patches, probe)
    found = out.amplitude.detach().numpy()[0]
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4 * expected.max())


def test_losses_match_their_definitions() -> None:
    rng = np.random.default_rng(9)
    predicted = rng.random((2, 1, 8, 8)).astype(np.float32) * 30
    target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    p, t = torch.from_numpy(predicted), torch.from_numpy(target)
    reference = core_physics.poisson_nll(
        predicted.astype(np.float64) ** 2, target.astype(np.float64) ** 2
    )
    assert physics.poisson_nll(p, t).item() == pytest.approx(reference, rel=1e-5)
    assert physics.mae_loss(p, t).item() == pytest.approx(
        np.abs(predicted - target).mean(), rel=1e-5
    )
    assert physics.poisson_deviance(t, t).item() == pytest.approx(0.0, abs=1e-3)
    assert physics.poisson_deviance(p, t).item() > 1.0
    obj = torch.polar(torch.full((1, 1, 4, 4), 0.8), torch.full((1, 1, 4, 4), 0.5))
    loss = physics.supervised_loss(
        torch.full((1, 1, 4, 4), 0.6), torch.full((1, 1, 4, 4), 0.25), obj
    )
    assert loss.item() == pytest.approx(2 * 0.2 + 4 * 0.25, rel=1e-6)


def test_probe_smoothing_and_mask() -> None:
    N = 64
    probe = torch.from_numpy(core_physics.normalize_probe(core_physics.default_probe(N), 4.0))
    assert torch.equal(physics.effective_probe(probe), probe)
    constant = torch.full((N, N), 2.0 - 1.0j, dtype=torch.complex64)
    smoothed = physics.gaussian_smooth(constant, 1.0)
    assert torch.allclose(smoothed, constant)  # normalised kernel, reflect padding
    delta = torch.zeros(N, N)
    delta[10, 20] = 1.0
    blurred = physics.gaussian_smooth(delta, 0.8)
    assert blurred.sum().item() == pytest.approx(1.0) and blurred[10, 20] < 1.0
    assert torch.count_nonzero(blurred) == 9
    # edges reflect without repeating the border pixel (scipy's 'mirror')
    field = np.random.default_rng(1).standard_normal((2, N, N)).astype(np.float32)
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * 0.7**2))
    kernel = np.outer(g, g) / g.sum() ** 2
    expected = np.stack([ndimage.correlate(f, kernel, mode="mirror") for f in field])
    found = physics.gaussian_smooth(torch.from_numpy(field), 0.7).numpy()
    np.testing.assert_allclose(found, expected, atol=1e-5)
    mask = torch.from_numpy(core_physics.probe_disk_mask(N).astype(np.float32))
    masked = physics.effective_probe(probe, mask=mask)
    assert masked[~mask.bool()].abs().max() == 0
    network = build_network(ModelConfig(N=N, probe_mask=True), probe.numpy(), 1.0)
    assert torch.equal(network.illuminating_probe(), masked)

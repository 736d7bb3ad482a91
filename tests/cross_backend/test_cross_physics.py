"""The two physics implementations compute the same diffraction, merge, extraction and losses."""

from __future__ import annotations

import numpy as np
import torch

from ptycho_core import physics as core_physics
from ptycho_tf import physics as tf_physics
from ptycho_torch import physics as torch_physics


def _parts(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-3).astype(np.float32)


def _complex(parts: np.ndarray) -> np.ndarray:
    return parts[..., 0, :, :] + 1j * parts[..., 1, :, :]


def test_both_physics_modules_provide_the_shared_names() -> None:
    for module in (tf_physics, torch_physics):
        missing = [name for name in core_physics.BACKEND_PHYSICS if not hasattr(module, name)]
        assert not missing, f"{module.__name__} lacks {missing}"
        assert set(core_physics.BACKEND_PHYSICS) <= set(module.__all__)


def test_same_object_and_probe_give_the_same_diffraction() -> None:
    rng = np.random.default_rng(7)
    N = 64
    obj = (rng.random((3, 4, N, N)) * np.exp(2j * np.pi * rng.random((3, 4, N, N)))).astype(
        np.complex64
    )
    probe = core_physics.normalize_probe(core_physics.focused_probe(N), 4.0)
    from_torch = torch_physics.diffract(torch.from_numpy(obj) * torch.from_numpy(probe)).numpy()
    from_tf = tf_physics.diffract(tf_physics.illuminate(_parts(obj), _parts(probe))).numpy()
    reference = core_physics.diffraction_amplitude(obj, probe)
    scale = float(reference.max())
    np.testing.assert_allclose(from_tf, from_torch, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(from_tf, reference, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(from_torch, reference, rtol=1e-4, atol=1e-5 * scale)


def test_merge_and_extract_agree() -> None:
    rng = np.random.default_rng(9)
    patches = (
        rng.standard_normal((5, 4, 64, 64)) + 1j * rng.standard_normal((5, 4, 64, 64))
    ).astype(np.complex64)
    offsets = ((rng.random((5, 4, 2)) - 0.5) * 12).astype(np.float32)
    canvas_torch = torch_physics.merge_patches(
        torch.from_numpy(patches), torch.from_numpy(offsets), 78
    ).numpy()[:, 0]
    canvas_tf = _complex(tf_physics.merge_patches(_parts(patches), offsets, 78).numpy())
    np.testing.assert_allclose(
        canvas_tf, canvas_torch, rtol=1e-5, atol=1e-5 * float(np.abs(canvas_torch).max())
    )
    seen_torch = torch_physics.extract_patches(
        torch.from_numpy(canvas_torch)[:, None], torch.from_numpy(offsets), 64
    ).numpy()
    seen_tf = _complex(tf_physics.extract_patches(_parts(canvas_torch), offsets, 64).numpy())
    np.testing.assert_allclose(
        seen_tf, seen_torch, rtol=1e-5, atol=1e-5 * float(np.abs(seen_torch).max())
    )


def test_losses_agree() -> None:
    rng = np.random.default_rng(1)
    predicted = (rng.random((4, 16, 16, 2)) * 30).astype(np.float32)
    target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    nll_torch = float(
        torch_physics.poisson_nll(torch.from_numpy(predicted), torch.from_numpy(target))
    )
    nll_tf = float(np.mean(tf_physics.poisson_nll(predicted, target).numpy()))
    assert np.isclose(nll_tf, nll_torch, rtol=1e-5)
    mae_torch = float(torch_physics.mae_loss(torch.from_numpy(predicted), torch.from_numpy(target)))
    assert np.isclose(
        float(np.mean(tf_physics.mae_loss(predicted, target).numpy())), mae_torch, rtol=1e-6
    )

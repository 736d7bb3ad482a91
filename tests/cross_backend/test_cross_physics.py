"""The two physics implementations compute the same diffraction, merge, extraction and losses."""

from __future__ import annotations

import numpy as np
from framework_suites.physics import object_and_probe
from framework_suites.tf_framework import TENSORFLOW
from framework_suites.torch_framework import TORCH

from ptycho_core import physics as core_physics
from ptycho_tf import physics as tf_physics
from ptycho_torch import physics as torch_physics


def _assert_close(found: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    np.testing.assert_allclose(
        found, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max())
    )


def test_both_physics_modules_provide_the_shared_names() -> None:
    for module in (tf_physics, torch_physics):
        missing = [name for name in core_physics.BACKEND_PHYSICS if not hasattr(module, name)]
        assert not missing, f"{module.__name__} lacks {missing}"
        assert set(core_physics.BACKEND_PHYSICS) <= set(module.__all__)


def test_same_object_and_probe_give_the_same_diffraction() -> None:
    obj, probe = object_and_probe(7, 3, 4, 64, 64)
    from_torch = TORCH.illuminate_and_diffract(obj, probe)
    from_tf = TENSORFLOW.illuminate_and_diffract(obj, probe)
    reference = core_physics.diffraction_amplitude(obj, probe)
    _assert_close(from_tf, from_torch, 1e-4)
    _assert_close(from_tf, reference, 1e-4)
    _assert_close(from_torch, reference, 1e-4)


def test_merge_and_extract_agree() -> None:
    rng = np.random.default_rng(9)
    patches = (
        rng.standard_normal((5, 4, 64, 64)) + 1j * rng.standard_normal((5, 4, 64, 64))
    ).astype(np.complex64)
    offsets = ((rng.random((5, 4, 2)) - 0.5) * 12).astype(np.float32)
    canvas = TORCH.merge_patches(patches, offsets, 78)
    _assert_close(TENSORFLOW.merge_patches(patches, offsets, 78), canvas, 1e-5)
    seen = TORCH.extract_patches(canvas, offsets, 64)
    _assert_close(TENSORFLOW.extract_patches(canvas, offsets, 64), seen, 1e-5)


def test_losses_agree() -> None:
    rng = np.random.default_rng(1)
    predicted = (rng.random((4, 16, 16, 2)) * 30).astype(np.float32)
    target = np.sqrt(rng.poisson(predicted.astype(np.float64) ** 2)).astype(np.float32)
    nll_torch = TORCH.poisson_nll(predicted, target)
    assert np.isclose(TENSORFLOW.poisson_nll(predicted, target), nll_torch, rtol=1e-5)
    mae_torch = TORCH.mae_loss(predicted, target)
    assert np.isclose(TENSORFLOW.mae_loss(predicted, target), mae_torch, rtol=1e-6)
    deviance_torch = TORCH.poisson_deviance(predicted, target)
    assert np.isclose(TENSORFLOW.poisson_deviance(predicted, target), deviance_torch, rtol=1e-5)

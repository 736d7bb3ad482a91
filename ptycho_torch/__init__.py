"""ptycho_torch: the PtychoPINN model on PyTorch + Lightning, registered as backend ``pytorch``.

Importing this package is cheap on purpose: it imports only ``ptycho_core`` and the
standard library, never torch, so ``ptycho backends`` can list it without paying the
2–4 s framework import. The implementation lives in :mod:`ptycho_torch.backend` and is
imported by the selector only when ``pytorch`` is chosen.

Modules (the TensorFlow backend mirrors the same names):

- :mod:`ptycho_torch.model` — the generator (encoder, amplitude and phase decoders) and
  :class:`~ptycho_torch.model.PtychoPINN`, generator + differentiable physics;
- :mod:`ptycho_torch.physics` — translation, merge canvas, illumination, diffraction,
  losses;
- :mod:`ptycho_torch.training` — the LightningModule and the Trainer factory;
- :mod:`ptycho_torch.persistence` — bundle payload (state dict) save and load;
- :mod:`ptycho_torch.backend` — :class:`~ptycho_torch.backend.TorchBackend`.
"""

from __future__ import annotations

from ptycho_core.protocol import BackendSpec

__all__ = ["BACKEND"]

BACKEND = BackendSpec(
    name="pytorch",
    target="ptycho_torch.backend:TorchBackend",
    requires=("torch", "lightning"),
    display_name="PyTorch",
    install_hint="pip install 'ptycho[torch]'",
    description="PtychoPINN on PyTorch + Lightning (CPU, CUDA, multi-device DDP)",
)

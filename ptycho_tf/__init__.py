"""ptycho_tf: the PtychoPINN model on TensorFlow + Keras 3, registered as backend ``tensorflow``.

Importing this package is cheap on purpose: it imports only ``ptycho_core`` and the
standard library, never TensorFlow or Keras, so ``ptycho backends`` can list it without
paying the ~4 s framework import. The implementation lives in :mod:`ptycho_tf.backend`
and is imported by the selector only when ``tensorflow`` is chosen.

Modules (the same names and jobs as :mod:`ptycho_torch`):

- :mod:`ptycho_tf.model` — the generator (encoder, amplitude and phase decoders) and
  :class:`~ptycho_tf.model.PtychoPINN`, generator + differentiable physics, as
  registered serialisable Keras classes;
- :mod:`ptycho_tf.physics` — translation, merge canvas, illumination, diffraction,
  losses;
- :mod:`ptycho_tf.training` — Keras ``fit`` with the schedule, early stopping, the hook
  callback, devices (``tf.distribute``) and precision;
- :mod:`ptycho_tf.persistence` — bundle payload (``.weights.h5``) save and strict load;
- :mod:`ptycho_tf.convert` — the framework-neutral weight arrays (export / import);
- :mod:`ptycho_tf.backend` — :class:`~ptycho_tf.backend.TensorFlowBackend`.
"""

from __future__ import annotations

from ptycho_core.protocol import BackendSpec

__all__ = ["BACKEND"]

BACKEND = BackendSpec(
    name="tensorflow",
    target="ptycho_tf.backend:TensorFlowBackend",
    requires=("tensorflow", "keras"),
    display_name="TensorFlow",
    install_hint="pip install 'ptycho[tf]'",
    description="PtychoPINN on TensorFlow + Keras 3 (CPU, GPU, multi-device MirroredStrategy)",
)

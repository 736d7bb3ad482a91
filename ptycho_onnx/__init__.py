"""ptycho_onnx: trained networks exported to ONNX and run on ONNX Runtime, backend ``onnx``.

The deployment backend: a model trained with ``pytorch`` or ``tensorflow`` is exported once
(``ptycho export BUNDLE --format onnx``) and inferred anywhere ONNX Runtime runs, with
neither framework installed. It does not train. Importing this package imports neither
ONNX Runtime nor ``onnx``; the selector imports :mod:`ptycho_onnx.backend` when ``onnx`` is
chosen.

Modules:

- :mod:`ptycho_onnx.graph` — the generator as an ONNX graph, built from neutral weights
  (needs ``onnx``, the ``onnx-export`` extra);
- :mod:`ptycho_onnx.quantize` — static int8 quantisation calibrated on simulated data
  (needs ``onnx``);
- :mod:`ptycho_onnx.runtime` — the tuned ONNX Runtime session and the graph's signature check;
- :mod:`ptycho_onnx.backend` — :class:`~ptycho_onnx.backend.OnnxBackend`.
"""

from __future__ import annotations

from ptycho_core.protocol import BackendSpec

__all__ = ["BACKEND"]

BACKEND = BackendSpec(
    name="onnx",
    target="ptycho_onnx.backend:OnnxBackend",
    requires=("onnxruntime",),
    display_name="ONNX Runtime",
    install_hint="pip install 'ptycho[onnx]'",
    description="exported PtychoPINN networks on ONNX Runtime: inference only, no framework",
)

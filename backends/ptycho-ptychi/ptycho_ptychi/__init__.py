"""ptycho-ptychi: pty-chi's iterative engines registered as ptycho backends.

One entry point per engine (``ptychi-lsqml``, ``ptychi-rpie``, ``ptychi-dm``), so the
engine is chosen where every backend is chosen (``--backend``, ``TrainingConfig.backend``,
the Ptychodus menu) and a bundle says which engine made it. This module is what the
entry points load, so it imports only ``ptycho_core.protocol``: neither torch nor
pty-chi is imported until a backend is selected.
"""

from __future__ import annotations

from ptycho_core.protocol import BackendSpec

__all__ = ["DM", "LSQML", "RPIE", "__version__"]

__version__ = "0.1.0"


def _engine(key: str, label: str, solver: str, target: str) -> BackendSpec:
    """The spec of backend ``ptychi-KEY``: pty-chi's engine ``label``."""
    return BackendSpec(
        name=f"ptychi-{key}",
        target=f"ptycho_ptychi.backend:{target}",
        requires=("torch", "torchvision", "ptychi"),
        display_name=f"pty-chi {label}",
        install_hint="pip install ptycho-ptychi",
        description=f"pty-chi's {solver} (fits the probe)",
    )


LSQML = _engine("lsqml", "LSQML", "least-squares maximum-likelihood solver", "LsqmlBackend")
RPIE = _engine("rpie", "rPIE", "regularised ptychographic iterative engine", "RpieBackend")
DM = _engine("dm", "DM", "difference-map solver", "DmBackend")

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

_REQUIRES = ("torch", "torchvision", "ptychi")
_INSTALL = "pip install ptycho-ptychi"

LSQML = BackendSpec(
    name="ptychi-lsqml",
    target="ptycho_ptychi.backend:LsqmlBackend",
    requires=_REQUIRES,
    display_name="pty-chi LSQML",
    install_hint=_INSTALL,
    description="pty-chi's least-squares maximum-likelihood solver (fits the probe)",
)
RPIE = BackendSpec(
    name="ptychi-rpie",
    target="ptycho_ptychi.backend:RpieBackend",
    requires=_REQUIRES,
    display_name="pty-chi rPIE",
    install_hint=_INSTALL,
    description="pty-chi's regularised ptychographic iterative engine (fits the probe)",
)
DM = BackendSpec(
    name="ptychi-dm",
    target="ptycho_ptychi.backend:DmBackend",
    requires=_REQUIRES,
    display_name="pty-chi DM",
    install_hint=_INSTALL,
    description="pty-chi's difference-map solver (fits the probe)",
)

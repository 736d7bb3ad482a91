"""ptycho-epie: an iterative rPIE/ePIE reconstruction registered as the ptycho backend 'epie'.

This module is what the ``ptycho.backends`` entry point ``epie = "ptycho_epie:BACKEND"``
loads, so it stays cheap: it imports only ``ptycho_core.protocol``. The implementation
(``ptycho_epie.backend``) is imported by ptycho's selector when 'epie' is selected.
"""

from __future__ import annotations

from ptycho_core.protocol import BackendSpec

__all__ = ["BACKEND", "__version__"]

__version__ = "0.1.0"

BACKEND = BackendSpec(
    name="epie",
    target="ptycho_epie.backend:EpieBackend",
    requires=("numpy", "scipy"),
    display_name="ePIE",
    install_hint="pip install ptycho-epie",
    description="iterative rPIE/ePIE reconstruction in numpy (fits probe, scale and step size)",
)

"""ptycho inside Ptychodus: one reconstructor library, the backend chosen in its settings.

Ptychodus (https://github.com/AdvancedPhotonSource/ptychodus) hard-codes its reconstructor
libraries. The launcher ``ptycho-ptychodus`` (:func:`launcher.main`) adds ours before
Ptychodus builds its model and then hands over to Ptychodus's own entry point, in batch
mode (``-b``) or with the GUI. ``specs/ptychodus.md`` is the normative description.

A top-level package of its own in the ``ptycho`` distribution (extra ``ptychodus``): it
builds on ``ptycho_core`` only, and ``ptycho_core`` never imports it.

Importing this package imports neither Ptychodus nor any ML framework; the names below
are resolved on first use:

- :class:`PtychoReconstructorLibrary` (``library``) — the ``ReconstructorLibrary``;
- :class:`PtychoReconstructor` (``reconstructor``) — its ``TrainableReconstructor``;
- :func:`install` / :func:`uninstall` (``launcher``) — add it to Ptychodus;
- :mod:`~ptycho_ptychodus.mapping` — the data conversions (numpy only);
- :mod:`~ptycho_ptychodus.worker` — the job a reconstructor runs, in a child process or
  in Ptychodus's own (numpy and the selected backend only).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LIBRARY_NAME",
    "LOGGER_NAME",
    "SETTINGS_GROUP",
    "PtychoReconstructor",
    "PtychoReconstructorLibrary",
    "install",
    "uninstall",
]

LIBRARY_NAME = "ptycho"
"""``ReconstructorLibrary.name``; Ptychodus keys are ``ptycho_<reconstructor>`` (no ``_`` here)."""
SETTINGS_GROUP = "Ptycho"
"""The one settings group (``[Ptycho]`` in a Ptychodus ``settings.ini``)."""
LOGGER_NAME = "ptycho_ptychodus"
"""The library's logger; Ptychodus shows what is logged here in its processing log."""

_LAZY = {
    "PtychoReconstructorLibrary": "library",
    "PtychoReconstructor": "reconstructor",
    "install": "launcher",
    "uninstall": "launcher",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""``PtychoReconstructorLibrary``: the ptycho library as Ptychodus builds its own.

Constructed like Ptychodus's built-in libraries, ``(settings_registry,
is_developer_mode_enabled)``, which is also the signature the entry-point group
``ptychodus.reconstructor_libraries`` proposes (specs/ptychodus.md §7). It creates the
``[Ptycho]`` settings group and two reconstructors, ``PINN`` and ``Supervised``
(Ptychodus keys ``ptycho_pinn`` and ``ptycho_supervised``). Building it imports no
framework and never fails because a backend is missing: the Backend setting is
checked, and a problem is logged with the selector's message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ptychodus.api.reconstruct import Reconstructor, ReconstructorLibrary

from ptycho_core._version import __version__
from ptycho_ptychodus import LIBRARY_NAME, LOGGER_NAME
from ptycho_ptychodus.reconstructor import MODEL_TYPES, PtychoReconstructor
from ptycho_ptychodus.settings import PtychoSettings

__all__ = ["PtychoReconstructorLibrary"]


class PtychoReconstructorLibrary(ReconstructorLibrary):
    """ptycho's reconstructors, one per model type; the backend is a setting."""

    def __init__(self, settings_registry: Any, is_developer_mode_enabled: bool = False) -> None:
        super().__init__(LOGGER_NAME)
        log = self.get_logger()
        self.settings = PtychoSettings(settings_registry, log)
        self._reconstructors = [
            PtychoReconstructor(name, self.settings, log) for name in MODEL_TYPES
        ]
        log.info("ptycho %s (backend setting: %s)", __version__, self.settings.backend)

    @property
    def name(self) -> str:
        return LIBRARY_NAME

    def __iter__(self) -> Iterator[Reconstructor]:
        return iter(self._reconstructors)

"""``ptycho-ptychodus``: Ptychodus with ptycho's reconstructor library added.

Ptychodus (up to 1.7) builds a fixed list of reconstructor libraries and passes it to
``ProcessingCore``, which it looks up as the module-global name
``ptychodus.model.core.ProcessingCore`` while ``ModelCore`` is being built (the same in
1.4–1.7). :func:`install` replaces that name with a subclass that appends the
libraries registered in the entry-point group ``ptychodus.reconstructor_libraries``
(ptycho's own always included), then :func:`main` hands over to Ptychodus's own
``main`` — batch mode (``-b``) or GUI. No Ptychodus file is touched; this is the
behaviour proposed for Ptychodus itself in specs/ptychodus.md §7.

Importing this module imports neither Ptychodus nor a framework (a child process that
re-imports the console script stays cheap); :func:`install` imports torch only where
pty-chi is installed, because Ptychodus then imports it itself.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any

from ptycho_ptychodus import LOGGER_NAME

__all__ = ["ENTRY_POINT_GROUP", "install", "installed", "library_factories", "main", "uninstall"]

ENTRY_POINT_GROUP = "ptychodus.reconstructor_libraries"
"""Entry points ``name = "module:Factory"``; ``Factory(settings_registry,
is_developer_mode_enabled)`` returns a ``ReconstructorLibrary``."""

_MARK = "_ptycho_original"  # the patched class keeps the one it replaced here
logger = logging.getLogger(LOGGER_NAME)


def library_factories() -> list[tuple[str, Callable[..., Any]]]:
    """(origin, factory) of every library to add: the entry points, then ptycho's own.

    An entry point that fails to load is logged and skipped; ptycho's library is
    included even when the distribution's metadata is missing (a source tree).
    """
    from ptycho_ptychodus.library import PtychoReconstructorLibrary

    factories: list[tuple[str, Callable[..., Any]]] = []
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        dist = entry_point.dist.name if entry_point.dist is not None else "<unknown distribution>"
        origin = f"entry point {entry_point.name} = {entry_point.value} (distribution {dist})"
        try:
            factory = entry_point.load()
        except Exception as error:
            logger.error("%s failed to load: %s: %s", origin, type(error).__name__, error)
            continue
        if all(existing is not factory for _, existing in factories):
            factories.append((origin, factory))
    if all(factory is not PtychoReconstructorLibrary for _, factory in factories):
        factories.append(("ptycho", PtychoReconstructorLibrary))
    return factories


def _extra_libraries(settings_registry: Any, taken: Iterable[str]) -> list[Any]:
    """Build every library of :func:`library_factories`; a failing one is logged, never raised."""
    names = {name.casefold() for name in taken}
    developer = logging.getLogger("ptychodus.model.core").getEffectiveLevel() <= logging.DEBUG
    libraries = []
    for origin, factory in library_factories():
        try:
            library = factory(settings_registry, developer)
            name = str(library.name)
        except Exception as error:
            logger.error(
                "reconstructor library from %s could not be created: %s: %s",
                origin,
                type(error).__name__,
                error,
            )
            continue
        if "_" in name or name.casefold() in names:
            problem = "contains '_'" if "_" in name else "is already taken"
            logger.error(
                "reconstructor library %r from %s skipped: its name %s", name, origin, problem
            )
            continue
        names.add(name.casefold())
        libraries.append(library)
    return libraries


def installed() -> bool:
    """Whether :func:`install` has patched the running Ptychodus."""
    import ptychodus.model.core as core

    return hasattr(core.ProcessingCore, _MARK)


def _let_ptychodus_import_ptychi() -> None:
    """Where pty-chi is installed, Ptychodus imports it (and with it torch and torchvision)
    in its own process while it builds its model. A torchvision whose compiled operators do
    not load next to the installed torch (a CUDA build beside a CPU torch) then raises at
    import, which Ptychodus does not expect, and Ptychodus cannot start. Only in that
    situation — torch is imported by Ptychodus anyway — make torchvision importable first
    (:func:`ptycho_torch.torchvision_ops.allow_torchvision_without_ops`)."""
    if importlib.util.find_spec("ptychi") is None or importlib.util.find_spec("torch") is None:
        return
    from ptycho_torch.torchvision_ops import allow_torchvision_without_ops

    allow_torchvision_without_ops()


def install() -> bool:
    """Make every ``ModelCore`` built from now on include ptycho's library; idempotent.

    Returns True if this call patched Ptychodus, False if it already was.
    """
    _let_ptychodus_import_ptychi()
    import ptychodus.model.core as core

    original = core.ProcessingCore
    if hasattr(original, _MARK):
        return False

    class ProcessingCore(original):  # type: ignore[misc, valid-type]
        """Ptychodus's ProcessingCore with the entry-point libraries appended."""

        def __init__(
            self,
            task_manager: Any,
            settings_registry: Any,
            product_api: Any,
            algorithm_libraries: Sequence[Any],
            *args: Any,
            **kwargs: Any,
        ) -> None:
            libraries = list(algorithm_libraries)
            libraries += _extra_libraries(settings_registry, (lib.name for lib in libraries))
            super().__init__(
                task_manager, settings_registry, product_api, libraries, *args, **kwargs
            )

    setattr(ProcessingCore, _MARK, original)
    ProcessingCore.__qualname__ = original.__qualname__
    core.ProcessingCore = ProcessingCore
    return True


def uninstall() -> bool:
    """Undo :func:`install` (for tests); returns False if it was not installed."""
    import ptychodus.model.core as core

    original = getattr(core.ProcessingCore, _MARK, None)
    if original is None:
        return False
    core.ProcessingCore = original
    return True


_NO_GUI_FLAGS = {"-b", "--batch", "-h", "--help", "-v", "--version"}


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``ptycho-ptychodus``: Ptychodus's command line, with ptycho added.

    Takes exactly Ptychodus's arguments (``-b {reconstruct,train} -i IN -o OUT``,
    ``-s SETTINGS``, ``--log-level``; none for the GUI).
    """
    if argv is not None:
        sys.argv[1:] = list(argv)
    arguments = sys.argv[1:]
    wants_gui = not any(a.split("=")[0] in _NO_GUI_FLAGS for a in arguments)
    if wants_gui and importlib.util.find_spec("PyQt5") is None:
        print(
            "ptycho-ptychodus: Ptychodus's GUI needs PyQt5 (pip install 'ptychodus[gui]'); "
            "batch mode works without it: ptycho-ptychodus -b reconstruct -i IN -o OUT",
            file=sys.stderr,
        )
    install()
    from ptychodus.__main__ import main as ptychodus_main

    return int(ptychodus_main())

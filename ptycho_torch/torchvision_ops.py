"""Importing torchvision when its compiled operators do not load next to this torch.

Lightning imports torchmetrics, which imports torchvision when it is installed (pty-chi
needs it, for one). The torchvision release made for a given torch is often published as
a CUDA build only; next to a CPU-only torch its compiled operators cannot load, and
torchvision 0.28 then fails at import while registering fake kernels for two of those
operators (``nms``, ``qnms``) — taking Lightning, and every library that imports it,
down with it. When, and only when, torchvision's compiled library does not load,
:func:`allow_torchvision_without_ops` declares the schemas of exactly those operators, so
torchvision imports with its operators reported unavailable
(``torchvision.extension._has_ops()`` is False, and calling one raises torchvision's own
"Couldn't load custom C++ ops" error). No operator is implemented or replaced.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["allow_torchvision_without_ops", "torchvision_ops_available"]

_FAKED_AT_IMPORT = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
"""Operators whose fake kernels torchvision registers unconditionally at import."""
_libraries: list[Any] = []  # a declared schema lives as long as its library object
_available: bool | None = None


def _compiled_library() -> Path | None:
    """torchvision's compiled operator library, or None when there is none."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("_C.*")):
            if candidate.suffix in (".so", ".pyd", ".dylib"):
                return candidate
    return None


def torchvision_ops_available() -> bool:
    """Whether torchvision is installed and its compiled operators load next to this torch."""
    global _available
    if _available is None:
        library = _compiled_library()
        try:
            if library is None:
                raise OSError("torchvision or its compiled operator library is not installed")
            torch.ops.load_library(str(library))
            _available = True
        except (OSError, ImportError, RuntimeError):
            _available = False
    return _available


def allow_torchvision_without_ops() -> None:
    """Make an installed torchvision importable when its operators cannot load (see the
    module docstring); does nothing when they load, when torchvision is not installed or
    when it is already imported."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    if torchvision_ops_available() or _libraries:
        return
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _FAKED_AT_IMPORT.items():
        try:
            getattr(torch.ops.torchvision, name)
        except (AttributeError, RuntimeError):
            library.define(schema)
    _libraries.append(library)

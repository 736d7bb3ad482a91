"""Finding, checking and creating reconstruction backends (specs/backend-protocol.md).

Design rules:

- Backends are found only through the ``ptycho.backends`` entry-point group. There is
  no table of known names here, so a third-party distribution is exactly as
  first-class as ``ptycho_torch`` or ``ptycho_tf``.
- Selecting a backend loads that one entry point and nothing else. Listing loads
  every entry point, which resolves to a cheap :class:`~ptycho_core.protocol.BackendSpec`,
  but imports no implementation module (``BackendSpec.target``) and no framework.
- Every failure names the backend, the distribution that registered it and the entry
  point, and says what to do; an unusable backend never silently falls back to another.
- Nothing is cached at module level: each call reads the installed metadata again and
  each :func:`select_backend` returns a fresh backend object.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ptycho_core.entry_points import (
    Registration,
    normalized,
)
from ptycho_core.entry_points import (
    registrations as read_registrations,
)
from ptycho_core.errors import (
    BackendConflictError,
    BackendLoadError,
    BackendUnavailableError,
    UnknownBackendError,
)
from ptycho_core.protocol import ENTRY_POINT_GROUP, BackendSpec, ReconstructionBackend

__all__ = [
    "INSTALL_HINT",
    "BackendInfo",
    "available_backends",
    "backend_info",
    "describe_backends",
    "protocol_problem",
    "select_backend",
]

INSTALL_HINT = (
    "pip install 'ptycho[torch]' for the PyTorch backend, pip install 'ptycho[tf]' for the "
    "TensorFlow backend, or install a distribution that registers a "
    f"'{ENTRY_POINT_GROUP}' entry point"
)
"""How to get a backend, appended to the unknown-backend message."""

# method → (placeholder positional arguments, keyword arguments, how the call reads)
_PROTOCOL_CALLS: Mapping[str, tuple[int, tuple[str, ...], str]] = {
    "train": (2, ("hooks",), "train(data, config, *, hooks)"),
    "infer": (3, ("hooks",), "infer(model, data, config, *, hooks)"),
    "save": (2, (), "save(model, path)"),
    "load": (1, (), "load(path)"),
}


@dataclass(frozen=True, kw_only=True)
class BackendInfo:
    """What ``ptycho backends`` shows about one registered backend.

    ``usable`` is decided without importing the backend's implementation or its
    framework: required modules are located with ``importlib.util.find_spec``. A target
    module that is present but fails when imported is reported by :func:`select_backend`
    (or by ``available_backends(verify=True)``).
    """

    name: str
    """Entry point name, the value of ``--backend``."""
    distribution: str
    """Distribution (pip package) that registers the entry point."""
    version: str | None
    """Version of that distribution."""
    entry_point: str
    """The entry point's value, ``"module:attribute"``."""
    usable: bool
    """Whether selecting it is expected to work."""
    reason: str | None = None
    """Why it is not usable (missing module and install command, load error, conflict)."""
    display_name: str = ""
    """Human name, e.g. ``"PyTorch"``; the entry point name when none is declared."""
    description: str = ""
    """One line describing the backend."""
    requires: tuple[str, ...] = ()
    """Top-level modules the backend needs, the framework first."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible fields (``ptycho backends --json``)."""
        result = dataclasses.asdict(self)
        result["requires"] = list(self.requires)
        return result


def _describe(obj: Any) -> str:
    """A short human description of what an entry point or target resolved to."""
    if inspect.ismodule(obj):
        return f"module {obj.__name__}"
    if inspect.isclass(obj):
        return f"class {obj.__module__}.{obj.__qualname__}"
    if inspect.isroutine(obj):
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", getattr(obj, "__name__", "?"))
        return f"function {module}.{qualname}" if module else f"function {qualname}"
    if isinstance(obj, BackendSpec):
        return f"BackendSpec(name={obj.name!r}, target={obj.target!r})"
    kind = type(obj)
    if kind.__module__ == "builtins":
        text = repr(obj)
        return f"{kind.__name__} {text[:57] + '...' if len(text) > 60 else text}"
    return f"an instance of {kind.__module__}.{kind.__qualname__}"


def _unknown_message(name: str, installed: Iterable[str]) -> str:
    names = sorted(installed)
    if not names:
        return (
            f"unknown backend {name!r}: no ptycho backends are installed. Install one: "
            f"{INSTALL_HINT}"
        )
    close = difflib.get_close_matches(name, names, n=1)
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown backend {name!r}. Installed backends: {', '.join(names)}.{suggestion} "
        f"To install more: {INSTALL_HINT}"
    )


def _conflict_message(name: str, registrations: list[Registration]) -> str:
    parts = "; ".join(r.where for r in registrations)
    distributions = " and ".join(repr(r.distribution) for r in registrations)
    return (
        f"backend {name!r} is registered by more than one distribution, {distributions}: "
        f"{parts}. Uninstall all but one of them."
    )


def _missing_modules(requires: Iterable[str]) -> list[str]:
    """The required top-level modules that cannot be found, without importing any."""
    missing = []
    for module in requires:
        if module in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing


def _unavailable_message(registration: Registration, spec: BackendSpec, detail: str) -> str:
    """Starts with "<Display> backend selected but <framework> module unavailable"."""
    display = spec.display_name or spec.name
    framework = spec.requires[0] if spec.requires else spec.name
    if spec.install_hint:
        action = f"Install it with: {spec.install_hint}"
    else:
        action = (
            f"Install the package that provides it; distribution {registration.distribution} "
            "declares no install command."
        )
    return (
        f"{display} backend selected but {framework} module unavailable: {detail} "
        f"(backend {spec.name!r}, {registration.where}). {action}"
    )


def _call_problem(method: Any, method_name: str, drop_self: bool = False) -> str | None:
    """Why ``method`` cannot be called the way the protocol calls it, or None."""
    n_positional, keywords, reads = _PROTOCOL_CALLS[method_name]
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):  # a builtin without a signature: cannot tell, accept
        return None
    if drop_self:
        parameters = list(signature.parameters.values())[1:]
        signature = signature.replace(parameters=parameters)
    try:
        signature.bind(*range(n_positional), **dict.fromkeys(keywords))
    except TypeError as error:
        return f"{method_name}{signature} cannot be called as {reads} ({error})"
    return None


def protocol_problem(obj: Any, expected_name: str) -> str | None:
    """Why ``obj`` is not a backend registered as ``expected_name``, or None when it is one.

    The validation of :func:`select_backend` (specs/backend-protocol.md §2, step 7): a
    string ``name`` equal to ``expected_name`` and callable ``train``, ``infer``, ``save``
    and ``load`` whose signatures accept the protocol's calls. Imports nothing and calls
    none of the methods (an attribute that raises propagates); the conformance kit
    applies it to the backend under test.
    """
    name = getattr(obj, "name", None)
    if name is None:
        return "it has no 'name' attribute"
    if not isinstance(name, str):
        return f"its 'name' attribute is {name!r}, not a string"
    if name != expected_name:
        return f"its name {name!r} differs from the entry point name {expected_name!r}"
    for method_name in _PROTOCOL_CALLS:
        method = getattr(obj, method_name, None)
        if not callable(method):
            return f"it has no callable '{method_name}' method"
        problem = _call_problem(method, method_name)
        if problem is not None:
            return problem
    return None


def _class_problem(cls: type, expected_name: str) -> str | None:
    """The static part of :func:`protocol_problem` for a class that is not instantiated."""
    name = inspect.getattr_static(cls, "name", None)
    if isinstance(name, str) and name != expected_name:
        return f"its name {name!r} differs from the entry point name {expected_name!r}"
    for method_name in _PROTOCOL_CALLS:
        raw = inspect.getattr_static(cls, method_name, None)
        if raw is None:
            return f"it has no '{method_name}' method"
        if isinstance(raw, staticmethod):
            problem = _call_problem(raw.__func__, method_name)
        elif inspect.isfunction(raw):
            problem = _call_problem(raw, method_name, drop_self=True)
        else:
            problem = _call_problem(getattr(cls, method_name), method_name)
        if problem is not None:
            return problem
    return None


def _not_a_backend(registration: Registration, obj: Any, problem: str) -> BackendLoadError:
    hint = ""
    if inspect.isroutine(obj):
        hint = (
            " (an entry point must resolve to a BackendSpec, a backend class or a backend "
            "instance; point a BackendSpec's target at a factory function instead)"
        )
    return BackendLoadError(
        f"{registration.where} resolved to {_describe(obj)}, which is not a ptycho backend: "
        f"{problem}{hint}"
    )


def _load_entry_point(registration: Registration) -> Any:
    try:
        return registration.entry_point.load()
    except Exception as error:
        raise BackendLoadError(
            f"backend {registration.name!r}: {registration.where} failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error


def _import_target(registration: Registration, spec: BackendSpec) -> Any:
    module_name, _, attribute = spec.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except ModuleNotFoundError as error:
        top_level = (error.name or "").partition(".")[0]
        if top_level in spec.requires:
            raise BackendUnavailableError(
                _unavailable_message(registration, spec, f"importing {spec.target} failed: {error}")
            ) from error
        raise BackendLoadError(
            f"backend {spec.name!r}: importing {spec.target} failed: "
            f"{type(error).__name__}: {error} ({registration.where}; a module the backend "
            "needs is not installed and not declared in BackendSpec.requires)"
        ) from error
    except Exception as error:
        raise BackendLoadError(
            f"backend {spec.name!r}: importing {spec.target} failed: "
            f"{type(error).__name__}: {error} ({registration.where})"
        ) from error
    return obj


def _instantiate(registration: Registration, obj: Any, spec: BackendSpec | None) -> Any:
    """Call a backend class or factory with no arguments, mapping failures to errors."""
    try:
        return obj()
    except ModuleNotFoundError as error:
        top_level = (error.name or "").partition(".")[0]
        if spec is not None and top_level in spec.requires:
            raise BackendUnavailableError(
                _unavailable_message(registration, spec, f"creating the backend failed: {error}")
            ) from error
        raise BackendLoadError(
            f"backend {registration.name!r}: creating the backend from {_describe(obj)} "
            f"failed: {type(error).__name__}: {error} ({registration.where})"
        ) from error
    except Exception as error:
        raise BackendLoadError(
            f"backend {registration.name!r}: creating the backend from {_describe(obj)} "
            f"failed: {type(error).__name__}: {error} ({registration.where})"
        ) from error


def _resolve(registration: Registration, obj: Any) -> ReconstructionBackend:
    """Turn what an entry point loaded into a checked backend object."""
    spec: BackendSpec | None = None
    if isinstance(obj, BackendSpec):
        spec = obj
        if spec.name != registration.name:
            raise _not_a_backend(
                registration,
                obj,
                f"BackendSpec.name {spec.name!r} differs from the entry point name "
                f"{registration.name!r}",
            )
        missing = _missing_modules(spec.requires)
        if missing:
            detail = f"no module named {', '.join(map(repr, missing))} could be found"
            raise BackendUnavailableError(_unavailable_message(registration, spec, detail))
        obj = _import_target(registration, spec)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            obj = _instantiate(registration, obj, spec)
    elif inspect.isclass(obj):
        obj = _instantiate(registration, obj, None)
    try:
        problem = protocol_problem(obj, registration.name)
    except Exception as error:  # e.g. a 'name' property that raises
        raise BackendLoadError(
            f"backend {registration.name!r}: checking {_describe(obj)} failed: "
            f"{type(error).__name__}: {error} ({registration.where})"
        ) from error
    if problem is not None:
        raise _not_a_backend(registration, obj, problem)
    return obj  # type: ignore[no-any-return]


def select_backend(name: str) -> ReconstructionBackend:
    """A fresh, checked backend object for the entry point ``name``.

    Only that entry point is loaded. Raises :class:`UnknownBackendError` (ValueError),
    :class:`BackendConflictError`, :class:`BackendUnavailableError` or
    :class:`BackendLoadError` (RuntimeErrors); see specs/backend-protocol.md.
    """
    if not isinstance(name, str) or not name:
        raise UnknownBackendError(f"backend name: expected a non-empty string, found {name!r}")
    registrations = read_registrations()
    matches = registrations.get(name)
    if not matches:
        raise UnknownBackendError(_unknown_message(name, registrations))
    if len(matches) > 1:
        raise BackendConflictError(_conflict_message(name, matches))
    registration = matches[0]
    return _resolve(registration, _load_entry_point(registration))


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _info(registration: Registration, *, conflict: str | None, verify: bool) -> BackendInfo:
    """Describe one registration; never raises for a broken plugin."""
    base: dict[str, Any] = {
        "name": registration.name,
        "distribution": registration.distribution,
        "version": registration.version,
        "entry_point": registration.entry_point.value,
        "display_name": registration.name,
    }
    if conflict is not None:
        return BackendInfo(**base, usable=False, reason=conflict)
    try:
        obj = _load_entry_point(registration)
    except BackendLoadError as error:
        return BackendInfo(**base, usable=False, reason=str(error))
    reason: str | None = None
    if isinstance(obj, BackendSpec):
        base.update(
            display_name=obj.display_name or registration.name,
            description=obj.description,
            requires=tuple(obj.requires),
        )
        missing = _missing_modules(obj.requires)
        target_package = obj.target.partition(":")[0].partition(".")[0]
        if obj.name != registration.name:
            reason = str(
                _not_a_backend(
                    registration,
                    obj,
                    f"BackendSpec.name {obj.name!r} differs from the entry point name "
                    f"{registration.name!r}",
                )
            )
        elif missing:
            detail = f"no module named {', '.join(map(repr, missing))} could be found"
            reason = _unavailable_message(registration, obj, detail)
        elif _missing_modules([target_package]):
            reason = (
                f"the package {target_package!r} of target {obj.target} cannot be found "
                f"({registration.where})"
            )
    else:
        base["description"] = str(getattr(obj, "description", "") or "") or _first_line(
            getattr(obj, "__doc__", None) if inspect.isclass(obj) else None
        )
        if inspect.isclass(obj):
            problem = _class_problem(obj, registration.name)
        else:
            problem = protocol_problem(obj, registration.name)
        if problem is not None:
            reason = str(_not_a_backend(registration, obj, problem))
    if reason is None and verify:
        try:
            _resolve(registration, obj)
        except Exception as error:
            reason = str(error)
    return BackendInfo(**base, usable=reason is None, reason=reason)


def available_backends(*, verify: bool = False) -> list[BackendInfo]:
    """Every registered backend, sorted by name (then distribution); never raises.

    Loads each entry point (a cheap ``BackendSpec``) but imports no implementation
    module. With ``verify=True`` each backend that looks usable is also fully selected
    (imports its framework), so a target that fails at import is reported too.
    """
    infos = []
    for name, registrations in read_registrations().items():
        for registration in registrations:
            conflict = None
            if len(registrations) > 1:
                others = [r.distribution for r in registrations if r is not registration]
                conflict = (
                    f"name conflict: backend {name!r} is also registered by "
                    f"{', '.join(map(repr, others))}; uninstall all but one"
                )
            try:
                info = _info(registration, conflict=conflict, verify=verify)
            except Exception as error:  # a plugin whose attributes raise: report, never fail
                info = BackendInfo(
                    name=registration.name,
                    distribution=registration.distribution,
                    version=registration.version,
                    entry_point=registration.entry_point.value,
                    usable=False,
                    reason=f"inspecting {registration.where} failed: "
                    f"{type(error).__name__}: {error}",
                    display_name=registration.name,
                )
            infos.append(info)
    return sorted(infos, key=lambda info: (info.name, normalized(info.distribution)))


def backend_info(name: str) -> BackendInfo:
    """The :class:`BackendInfo` of one backend, loading only its entry point.

    Raises :class:`UnknownBackendError` when no distribution registers ``name`` and
    :class:`BackendConflictError` when several do.
    """
    if not isinstance(name, str) or not name:
        raise UnknownBackendError(f"backend name: expected a non-empty string, found {name!r}")
    registrations = read_registrations()
    matches = registrations.get(name)
    if not matches:
        raise UnknownBackendError(_unknown_message(name, registrations))
    if len(matches) > 1:
        raise BackendConflictError(_conflict_message(name, matches))
    return _info(matches[0], conflict=None, verify=False)


def describe_backends(infos: Iterable[BackendInfo]) -> str:
    """A plain-text table for ``ptycho backends``: name, usable, distribution, notes."""
    rows = [("backend", "usable", "distribution", "notes")]
    for info in infos:
        dist = f"{info.distribution}=={info.version}" if info.version else info.distribution
        notes = info.reason if info.reason else (info.description or info.display_name)
        rows.append((info.name, "yes" if info.usable else "no", dist, notes or ""))
    if len(rows) == 1:
        return f"no ptycho backends are installed. Install one: {INSTALL_HINT}"
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)

"""Checks of what the backend is: its attributes and methods (§1, §5), and what selecting
it imports (§2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping

from ptycho_core.backend_options import OPTION_KINDS, declared_options
from ptycho_core.backend_selector import available_backends, backend_info, protocol_problem
from ptycho_core.protocol import KNOWN_CAPABILITIES, DeclaresCapabilities, SupportsForward
from ptycho_core.testing.checks.support import fail, rule_check
from ptycho_core.testing.errors import CheckSkipped
from ptycho_core.testing.harness import BackendHarness

__all__ = ["check_protocol", "check_selection_imports"]

# Modules that ptycho_core itself needs: never "another backend's" dependency.
_CORE_MODULES = frozenset({"numpy", "scipy", "pluggy", "ptycho_core", "importlib_metadata"})


@rule_check("protocol", "§1, §2 step 7, §5, §11")
def check_protocol(h: BackendHarness) -> None:
    """The object has a string ``name`` and callable ``train``/``infer``/``save``/``load``
    accepting the protocol's calls; optional extras have the reserved types; a backend
    selected by name is listed as usable by ``ptycho backends``."""
    me = check_protocol
    backend = h.backend
    problem = protocol_problem(backend, h.name)
    if problem is not None:
        raise fail(h, me, "a ptycho backend (name and four protocol methods)", problem)
    description = getattr(backend, "description", None)
    if description is not None and not isinstance(description, str):
        raise fail(h, me, "'description' to be a str when present", f"{type(description).__name__}")
    if isinstance(backend, SupportsForward) and not callable(backend.forward):
        found = type(backend.forward).__name__
        raise fail(h, me, "'forward' to be callable when present", found)
    if isinstance(backend, DeclaresCapabilities):
        capabilities = backend.capabilities
        if not isinstance(capabilities, Mapping):
            raise fail(
                h,
                me,
                "'capabilities' to be a mapping of capability name to bool",
                f"{type(capabilities).__name__}",
            )
        unknown = sorted(str(k) for k in capabilities if k not in KNOWN_CAPABILITIES)
        if unknown:
            raise fail(
                h,
                me,
                f"capability names among {', '.join(map(repr, KNOWN_CAPABILITIES))}",
                f"unknown {', '.join(map(repr, unknown))}",
            )
        not_bool = sorted(str(k) for k, v in capabilities.items() if not isinstance(v, bool))
        if not_bool:
            raise fail(h, me, "capability values True or False", f"non-bool values for {not_bool}")
    for kind, attribute in OPTION_KINDS.items():
        try:
            declared_options(backend, kind)  # type: ignore[arg-type]
        except TypeError as error:
            raise fail(
                h, me, f"'{attribute}' to be a tuple of BackendOption when present", str(error)
            ) from error
    if h.selected_by_name:
        info = backend_info(h.name)
        if not info.usable:
            raise fail(h, me, "'ptycho backends' to list it as usable", f"{info.reason}")


_SELECTION_PROBE = textwrap.dedent(
    """
    import json, sys
    from ptycho_core.backend_selector import select_backend
    select_backend(sys.argv[1])
    print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
    """
)


@rule_check("selection-imports", "§2")
def check_selection_imports(h: BackendHarness) -> None:
    """In a fresh interpreter, selecting the backend imports no module that another
    installed backend declares in its ``requires`` and this one does not (nor does core):
    selecting pytorch never imports tensorflow."""
    me = check_selection_imports
    if not h.selected_by_name:
        raise CheckSkipped("the backend was given as a class or instance, not an entry point name")
    infos = available_backends()
    own_modules = set(_CORE_MODULES)
    for info in infos:
        if info.name == h.name:
            own_modules.update(info.requires)
    owners: dict[str, list[str]] = {}
    for info in infos:
        if info.name == h.name:
            continue
        for module in info.requires:
            if module not in own_modules:
                owners.setdefault(module, []).append(f"{info.name!r} ({info.distribution})")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p])
    result = subprocess.run(
        [sys.executable, "-c", _SELECTION_PROBE, h.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise fail(h, me, f"select_backend({h.name!r}) to succeed in a fresh interpreter", tail)
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    leaked = sorted(imported & owners.keys())
    if leaked:
        found = "; ".join(f"{m} (needed by {', '.join(owners[m])})" for m in leaked)
        raise fail(
            h,
            me,
            f"selecting {h.name!r} to import none of another backend's modules",
            f"it imported {found}",
        )

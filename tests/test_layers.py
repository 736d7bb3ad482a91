"""The layering of ``ptycho_core``, read from the code: formats below the registry below
workflows below the command line, and no framework, Ptychodus or CLI code underneath.

Every import statement of every module counts, including those inside functions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ptycho_core

CORE = Path(ptycho_core.__file__).parent

FORMATS = {"bundle", "data", "results", "npz", "outputs", "_atomic", "limits", "entry_points"}
"""File formats and their bounds: below the registry."""
REGISTRY = {"backend_selector"}
MAY_SELECT = {"__init__", "workflows", "testing", "cli"}
"""Modules allowed to import the selector: the dispatching workflows, the conformance kit
(it tests a backend directly), the CLI's listing, and the package's public re-exports."""
FRAMEWORKS = {
    "torch",
    "tensorflow",
    "keras",
    "lightning",
    "onnx",
    "onnxruntime",
    "ptycho_torch",
    "ptycho_tf",
    "ptycho_onnx",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE).with_suffix("").parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {_module_name(p): _imports(p) for p in sorted(CORE.rglob("*.py"))}


def _core_targets(imports: set[str]) -> set[str]:
    """The first component below ``ptycho_core`` of every core module imported."""
    return {name.split(".")[1] for name in imports if name.startswith("ptycho_core.")}


def _top(module: str) -> str:
    return module.split(".")[0]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_forbidden_edge(module: str) -> None:
    imports = MODULES[module]
    targets = _core_targets(imports)
    top = _top(module)
    problems = []
    if top != "cli" and "cli" in targets:
        problems.append("imports the command line")
    if top in FORMATS and targets & ({"workflows"} | REGISTRY):
        problems.append(f"a format module imports {sorted(targets & ({'workflows'} | REGISTRY))}")
    if top in REGISTRY and targets & (FORMATS - {"entry_points"} | {"workflows"}):
        problems.append(f"the registry imports {sorted(targets & (FORMATS | {'workflows'}))}")
    if top in FORMATS | REGISTRY and "ptycho_core" in imports:
        problems.append("imports the package's public face (and with it everything above)")
    if top not in MAY_SELECT and "backend_selector" in targets:
        problems.append("selects backends itself (dispatch belongs to workflows)")
    if frameworks := {name for name in imports if name.split(".")[0] in FRAMEWORKS}:
        problems.append(f"imports a framework: {sorted(frameworks)}")
    if ptychodus := {
        name for name in imports if name.split(".")[0] in {"ptychodus", "ptycho_ptychodus"}
    }:
        problems.append(f"imports Ptychodus code: {sorted(ptychodus)}")
    assert not problems, f"ptycho_core.{module}: " + "; ".join(problems)


def test_the_walk_sees_the_layers() -> None:
    """The rules above are only as good as the walk: it must see known edges."""
    assert "ptycho_core.backend_selector.select_backend" in MODULES["workflows"]
    assert "npz" in _core_targets(MODULES["bundle"])
    assert "entry_points" in _core_targets(MODULES["backend_selector"])


def test_importing_ptycho_core_loads_no_package_built_on_it() -> None:
    """What the walk cannot see (an import through ``importlib``), the interpreter can."""
    dependents = (
        "ptycho_ptychodus",
        "ptycho_torch",
        "ptycho_tf",
        "ptycho_onnx",
        "ptychodus",
        "torch",
        "tensorflow",
        "onnxruntime",
    )
    code = (
        f"import sys, ptycho_core\nprint(','.join(m for m in {dependents!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""

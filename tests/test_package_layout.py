"""The distribution's packages depend one way: everything builds on ``ptycho_core``, never back.

``ptycho_core`` is the framework-free library; the backends (``ptycho_torch``,
``ptycho_tf``) and the Ptychodus adapter (``ptycho_ptychodus``) are packages of their own
next to it. Nothing in ``ptycho_core`` may import them, or Ptychodus.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ptycho_core

DEPENDENTS = ("ptycho_ptychodus", "ptycho_torch", "ptycho_tf", "ptychodus")


def _imported_top_level_names(source: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_ptycho_core_module_imports_a_package_built_on_it() -> None:
    root = Path(ptycho_core.__file__).parent
    sources = sorted(root.rglob("*.py"))
    assert sources
    found = {
        str(source.relative_to(root)): sorted(_imported_top_level_names(source) & set(DEPENDENTS))
        for source in sources
    }
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_importing_ptycho_core_imports_no_package_built_on_it() -> None:
    code = (
        f"import sys, ptycho_core\nprint(','.join(m for m in {DEPENDENTS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == ""

"""Importing the repository's scripts (scripts/*.py) as modules in tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def import_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` as a module (its sibling ``measuring`` importable while it loads)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))

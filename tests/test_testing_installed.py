"""installation_problems: a backend's suite refuses a missing or stale installation."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from ptycho_core.testing.installed import installation_problems

PLUGIN = Path(__file__).resolve().parent / "plugins" / "ptycho-testbackends"


def _entry_points() -> dict[str, str]:
    project = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    return dict(project["entry-points"]["ptycho.backends"])


def test_the_installed_test_distribution_matches_its_source() -> None:
    problems = installation_problems(
        "ptycho-testbackends", PLUGIN, "ptycho_testbackends", _entry_points()
    )
    assert problems == []


def test_a_missing_distribution_is_named() -> None:
    assert installation_problems("ptycho-not-installed-anywhere", PLUGIN, "x", {}) == [
        "distribution 'ptycho-not-installed-anywhere' is not installed"
    ]


def test_other_entry_points_and_changed_files_are_found(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(PLUGIN / "ptycho_testbackends", source / "ptycho_testbackends")
    changed = source / "ptycho_testbackends" / "specs.py"
    changed.write_text(changed.read_text() + "\n# edited after installing\n")
    entry_points = {**_entry_points(), "extra": "ptycho_testbackends.specs:EXTRA"}
    problems = installation_problems(
        "ptycho-testbackends", source, "ptycho_testbackends", entry_points
    )
    assert any("entry points" in p for p in problems), problems
    assert "installed ptycho_testbackends/specs.py differs from the source" in problems
    assert len([p for p in problems if "differs from the source" in p]) == 1

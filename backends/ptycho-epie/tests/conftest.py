"""Fixtures of the ptycho-epie tests.

The tests use ptycho-epie as users do: installed as its own distribution and found
through its ``ptycho.backends`` entry point. An installation that is missing or older
than this source tree fails every test (never skips), naming the command that fixes it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1]
INSTALL = f"pip install --no-deps {SOURCE}"


def _installation_problems() -> list[str]:
    try:
        dist = importlib.metadata.distribution("ptycho-epie")
    except importlib.metadata.PackageNotFoundError:
        return ["distribution 'ptycho-epie' is not installed"]
    problems = []
    entry_points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "ptycho.backends"}
    if entry_points != {"epie": "ptycho_epie:BACKEND"}:
        problems.append(f"installed entry points {entry_points} differ from pyproject.toml")
    for file in sorted((SOURCE / "ptycho_epie").glob("*.py")):
        relative = file.relative_to(SOURCE)
        copy = Path(str(dist.locate_file(relative)))
        if copy.resolve() != file.resolve() and (
            not copy.is_file() or copy.read_bytes() != file.read_bytes()
        ):
            problems.append(f"installed {relative} differs from the source")
    return problems


@pytest.fixture(scope="session", autouse=True)
def epie_installed() -> None:
    problems = _installation_problems()
    if problems:
        pytest.fail(
            "ptycho-epie is missing or stale: " + "; ".join(problems) + f". Run: {INSTALL}",
            pytrace=False,
        )

"""Fixtures of the ptycho-ptychi tests.

The tests use ptycho-ptychi as users do: installed as its own distribution and found
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
        dist = importlib.metadata.distribution("ptycho-ptychi")
    except importlib.metadata.PackageNotFoundError:
        return ["distribution 'ptycho-ptychi' is not installed"]
    problems = []
    entry_points = {ep.name: ep.value for ep in dist.entry_points if ep.group == "ptycho.backends"}
    expected = {
        "ptychi-lsqml": "ptycho_ptychi:LSQML",
        "ptychi-rpie": "ptycho_ptychi:RPIE",
        "ptychi-dm": "ptycho_ptychi:DM",
    }
    if entry_points != expected:
        problems.append(f"installed entry points {entry_points} differ from pyproject.toml")
    for file in sorted((SOURCE / "ptycho_ptychi").glob("*.py")):
        relative = file.relative_to(SOURCE)
        copy = Path(str(dist.locate_file(relative)))
        if copy.resolve() != file.resolve() and (
            not copy.is_file() or copy.read_bytes() != file.read_bytes()
        ):
            problems.append(f"installed {relative} differs from the source")
    return problems


@pytest.fixture(scope="session", autouse=True)
def ptychi_installed() -> None:
    problems = _installation_problems()
    if problems:
        pytest.fail(
            "ptycho-ptychi is missing or stale: " + "; ".join(problems) + f". Run: {INSTALL}",
            pytrace=False,
        )

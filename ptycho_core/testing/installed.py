"""Is a backend distribution installed as its source says? For a backend's own test suite.

A backend's tests should use the backend as users do: installed as a distribution and
found through its entry points. :func:`installation_problems` compares the installed
distribution with its source tree, so a missing or stale installation fails the suite
with the command that fixes it instead of testing old code.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path

__all__ = ["installation_problems"]


def installation_problems(
    distribution: str, source: Path, package: str, entry_points: Mapping[str, str]
) -> list[str]:
    """What differs between the installed ``distribution`` and its ``source`` folder.

    Checks that it is installed, that its ``ptycho.backends`` entry points are exactly
    ``entry_points`` (name → ``module:attribute``), and that every ``.py`` file of
    ``source/package`` is installed unchanged (an editable install points at the source
    itself). An empty list means the installation is current.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return [f"distribution {distribution!r} is not installed"]
    problems = []
    found = {ep.name: ep.value for ep in dist.entry_points if ep.group == "ptycho.backends"}
    if found != dict(entry_points):
        problems.append(f"installed entry points {found} differ from pyproject.toml")
    for file in sorted((source / package).glob("*.py")):
        relative = file.relative_to(source)
        copy = Path(str(dist.locate_file(relative)))
        if copy.resolve() != file.resolve() and (
            not copy.is_file() or copy.read_bytes() != file.read_bytes()
        ):
            problems.append(f"installed {relative} differs from the source")
    return problems

"""Reading the ``ptycho.backends`` entry-point metadata, without importing anything.

The selector (which backends exist, which one to load) and the bundle writer (which
distribution made a model) both need to know which installed distributions register
a backend name; this module answers from the installed metadata alone, so the file
format does not depend on the selector above it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from ptycho_core.protocol import ENTRY_POINT_GROUP

__all__ = [
    "UNKNOWN_DISTRIBUTION",
    "Registration",
    "normalized",
    "registered_distribution",
    "registrations",
]

UNKNOWN_DISTRIBUTION = "<unknown distribution>"


@dataclass(frozen=True)
class Registration:
    """One entry point of one distribution."""

    entry_point: EntryPoint
    distribution: str
    version: str | None

    @property
    def name(self) -> str:
        return self.entry_point.name

    @property
    def where(self) -> str:
        """``entry point NAME = VALUE (distribution DIST VERSION)``, used in every message."""
        version = f" {self.version}" if self.version else ""
        return (
            f"entry point {self.entry_point.name} = {self.entry_point.value} "
            f"(distribution {self.distribution}{version})"
        )


def normalized(distribution: str) -> str:
    """PEP 503 name normalisation: one distribution under two spellings counts once."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def registrations(name: str | None = None) -> dict[str, list[Registration]]:
    """Entry point name → its registrations, one per distribution, reading metadata only.

    Nothing is cached: each call reads the installed metadata again.
    """
    found = entry_points(group=ENTRY_POINT_GROUP)
    if name is not None:
        found = found.select(name=name)
    result: dict[str, list[Registration]] = {}
    seen: set[tuple[str, str]] = set()
    for entry_point in found:
        dist = entry_point.dist
        dist_name = (dist.name if dist is not None else None) or UNKNOWN_DISTRIBUTION
        key = (entry_point.name, normalized(dist_name))
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        version = dist.version if dist is not None else None
        result.setdefault(entry_point.name, []).append(
            Registration(entry_point, dist_name, version)
        )
    for found_for_name in result.values():
        found_for_name.sort(key=lambda r: normalized(r.distribution))
    return result


def registered_distribution(name: str) -> tuple[str | None, str | None]:
    """(distribution, version) registering backend ``name``; (None, None) unless exactly one."""
    found = registrations(name).get(name, [])
    if len(found) != 1:
        return None, None
    return found[0].distribution, found[0].version

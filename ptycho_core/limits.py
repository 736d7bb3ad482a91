"""Bounds on every size, count and coordinate read from a file (specs/limits.md).

A number read from a file decides how much memory or time ptycho spends, so each such
number is checked against a bound before anything is allocated or run. The defaults
fit every legitimate dataset of the sizes ptycho handles on one machine; a user with
larger data raises a bound with its environment variable (a positive integer, read at
the moment of the check, so a test or a long-running process can change it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ptycho_core.errors import ConfigError

__all__ = [
    "MAX_ARRAY_BYTES",
    "MAX_CANVAS_PIXELS",
    "MAX_COORDINATE",
    "MAX_ITERATIONS",
    "MAX_PROBE_MODES",
    "Limit",
]


@dataclass(frozen=True)
class Limit:
    """A documented bound with a default and the environment variable that overrides it."""

    name: str
    default: int
    variable: str
    what: str

    @property
    def value(self) -> int:
        """The bound in force: the environment variable when set, else the default."""
        text = os.environ.get(self.variable)
        if text is None or not text.strip():
            return self.default
        try:
            value = int(text.strip().replace("_", ""))
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigError(
                f"environment variable {self.variable}: expected a positive integer "
                f"({self.what}), found {text!r}"
            )
        return value

    def exceeded(self, found: int | float, unit: str = "") -> str:
        """The message tail for a value above the bound: what was found, how to raise it."""
        suffix = f" {unit}" if unit else ""
        return (
            f"{found:.6g}{suffix}, more than the limit of {self.value}{suffix} ({self.what}; "
            f"set {self.variable} to raise it)"
        )


MAX_ARRAY_BYTES = Limit(
    "array bytes",
    8 * 1024**3,
    "PTYCHO_MAX_ARRAY_BYTES",
    "bytes of array data read from one .npz or .npy file",
)
MAX_CANVAS_PIXELS = Limit(
    "canvas pixels",
    1 << 28,
    "PTYCHO_MAX_CANVAS_PIXELS",
    "pixels of an object, reconstruction or stitching canvas",
)
MAX_COORDINATE = Limit(
    "coordinate",
    1 << 24,
    "PTYCHO_MAX_COORDINATE",
    "absolute value of a scan position in object pixels",
)
MAX_PROBE_MODES = Limit(
    "probe modes", 64, "PTYCHO_MAX_PROBE_MODES", "probe modes stored in a dataset"
)
MAX_ITERATIONS = Limit(
    "iterations",
    100_000,
    "PTYCHO_MAX_ITERATIONS",
    "iterations of an iterative reconstruction, given or read from a bundle",
)

"""The installed version of ptycho, read from its distribution metadata.

A module of its own so that the file formats (which record the version that wrote a
file) can know it without importing the package's public face and all it re-exports.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("ptycho")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

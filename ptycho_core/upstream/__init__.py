"""Upstream PtychoPINN's model archives and settings, read as data (specs/bundle-format.md §9).

Nothing here imports a framework at import time or runs code stored in an archive.
"""

from ptycho_core.upstream.archive import VERSIONS, UpstreamModel, read_upstream_archive
from ptycho_core.upstream.params import UpstreamSettings, settings_from_params
from ptycho_core.upstream.pickles import load_pickle

__all__ = [
    "VERSIONS",
    "UpstreamModel",
    "UpstreamSettings",
    "load_pickle",
    "read_upstream_archive",
    "settings_from_params",
]

"""Exception types shared by every part of ptycho.

Each error subclasses the built-in type a caller would naturally catch
(``ValueError`` for bad input, ``RuntimeError`` for an unusable environment), so
code written against the upstream package keeps working, while ``PtychoError``
lets the CLI tell a user's mistake from a bug.
"""

from __future__ import annotations

__all__ = [
    "BackendConflictError",
    "BackendLoadError",
    "BackendMismatchError",
    "BackendUnavailableError",
    "BundleError",
    "CapabilityError",
    "ConfigError",
    "DataContractError",
    "PtychoError",
    "UnknownBackendError",
    "UpstreamArchiveError",
]


class PtychoError(Exception):
    """Base of every error ptycho raises on purpose; the CLI prints these as one line."""


class ConfigError(PtychoError, ValueError):
    """A configuration value (a config field, a JSON document, a limit) is not valid."""


class DataContractError(PtychoError, ValueError):
    """An NPZ file or in-memory dataset breaks the data contract (specs/data-contract.md)."""


class BundleError(PtychoError, ValueError):
    """A model bundle is corrupt, truncated, foreign or unsafe (specs/bundle-format.md)."""


class BackendMismatchError(BundleError):
    """A bundle written by one backend was handed to another."""


class UnknownBackendError(PtychoError, ValueError):
    """No installed distribution registers the requested backend name."""


class BackendUnavailableError(PtychoError, RuntimeError):
    """The backend is registered but a module it declares as required cannot be found."""


class BackendLoadError(PtychoError, RuntimeError):
    """The backend's entry point or implementation failed to import or is not a backend."""


class BackendConflictError(PtychoError, RuntimeError):
    """Two installed distributions register the same backend name."""


class CapabilityError(PtychoError, ValueError):
    """The backend lacks an optional capability the request needs (specs/backend-protocol.md §9).

    Raised instead of falling back silently (e.g. to training from scratch or to a flat start).
    """


class UpstreamArchiveError(PtychoError, ValueError):
    """An upstream PtychoPINN archive cannot be imported: unsafe, corrupt or not representable."""

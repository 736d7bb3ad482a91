"""ptycho_core: the framework-free half of ptycho.

Importing this package loads numpy, scipy and pluggy only. Backends (PyTorch,
TensorFlow, third-party) are found through the ``ptycho.backends`` entry points and
imported only when selected.
"""

from __future__ import annotations

from ptycho_core._version import __version__
from ptycho_core.backend_selector import (
    BackendInfo,
    available_backends,
    backend_info,
    select_backend,
)
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig, to_legacy_dict
from ptycho_core.errors import (
    BackendConflictError,
    BackendLoadError,
    BackendMismatchError,
    BackendUnavailableError,
    BundleError,
    CapabilityError,
    ConfigError,
    DataContractError,
    PtychoError,
    UnknownBackendError,
)
from ptycho_core.protocol import (
    BackendSpec,
    DeclaresCapabilities,
    ReconstructionBackend,
    SupportsArrayExport,
    SupportsArrayImport,
    SupportsForward,
    SupportsInitialObject,
    SupportsWarmStart,
    TrainedModel,
    TrainingData,
)

__all__ = [
    "BackendConflictError",
    "BackendInfo",
    "BackendLoadError",
    "BackendMismatchError",
    "BackendSpec",
    "BackendUnavailableError",
    "BundleError",
    "CapabilityError",
    "ConfigError",
    "DataContractError",
    "DeclaresCapabilities",
    "InferenceConfig",
    "ModelConfig",
    "PtychoError",
    "ReconstructionBackend",
    "SupportsArrayExport",
    "SupportsArrayImport",
    "SupportsForward",
    "SupportsInitialObject",
    "SupportsWarmStart",
    "TrainedModel",
    "TrainingConfig",
    "TrainingData",
    "UnknownBackendError",
    "__version__",
    "available_backends",
    "backend_info",
    "select_backend",
    "to_legacy_dict",
]

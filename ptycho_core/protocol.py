"""The contract between ptycho and a reconstruction backend.

A backend is any object with a ``name`` and four methods — ``train``, ``infer``,
``save`` and ``load`` — that take and return numpy arrays and the core dataclasses
below, never framework tensors. Everything shared (reading data, grouping,
normalisation, stitching, metrics, the bundle manifest) is done once, here in core;
a backend only maps normalised diffraction to complex object patches and persists
what it learned. ``specs/backend-protocol.md`` is the normative description.

Two optional capabilities extend the four methods (specs/backend-protocol.md §9):
:class:`SupportsWarmStart` (``train_from``: continue training a trained model, e.g. on
the very scan it is about to reconstruct) and :class:`SupportsInitialObject`
(``infer_from``: start an iterative solver from a given object, such as a network's
reconstruction). Core checks them with ``isinstance`` and refuses a request a backend
cannot serve instead of falling back silently.

Backends are found through the ``ptycho.backends`` entry-point group. The entry point
should resolve to a :class:`BackendSpec`: a cheap declaration of the modules the
backend needs and where its implementation lives, so that listing and selecting
backends never imports a heavy framework that was not asked for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.errors import BackendMismatchError, ConfigError, DataContractError
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.stitching import Stitched

__all__ = [
    "ENTRY_POINT_GROUP",
    "KNOWN_CAPABILITIES",
    "PROTOCOL_METHODS",
    "BackendSpec",
    "DeclaresCapabilities",
    "ReconstructionBackend",
    "SupportsArrayExport",
    "SupportsArrayImport",
    "SupportsForward",
    "SupportsInitialObject",
    "SupportsWarmStart",
    "TrainedModel",
    "TrainingData",
    "declared_capabilities",
]

_Payload = TypeVar("_Payload")

ENTRY_POINT_GROUP = "ptycho.backends"
PROTOCOL_METHODS: tuple[str, ...] = ("train", "infer", "save", "load")
KNOWN_CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "deterministic": "training is reproducible for a seed on the CPU (check 'train-deterministic')",
        "gridsize_gt_1": "gridsize > 1 is supported (the training and inference checks at gridsize > 1)",
        "trains": "train makes models; False for a backend that only runs models made elsewhere (exported), whose checks start from import_arrays",
    }
)
"""Names a backend may declare False in its ``capabilities`` mapping; all default to True."""


@dataclass(frozen=True, kw_only=True)
class BackendSpec:
    """What an entry point of ``ptycho.backends`` resolves to.

    Creating a spec must be cheap: the module that defines it imports nothing but
    ``ptycho_core`` and the standard library. The selector checks ``requires`` with
    ``importlib.util.find_spec`` (no import) before it imports ``target``.
    """

    name: str
    """Backend name users type (``--backend NAME``); equals the entry point's name."""
    target: str
    """``"package.module:attribute"`` of the backend class (instantiated with no
    arguments), of a no-argument factory, or of a ready backend instance."""
    requires: tuple[str, ...] = ()
    """Top-level modules that must be importable, the framework first."""
    display_name: str | None = None
    """Human name used in messages, e.g. ``"PyTorch"``; defaults to ``name``."""
    install_hint: str | None = None
    """Command that installs the missing modules, e.g. ``pip install 'ptycho[torch]'``."""
    description: str = ""
    """One line shown by ``ptycho backends``."""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"BackendSpec.name: expected a non-empty string, found {self.name!r}")
        module, sep, attribute = self.target.partition(":")
        if not (module and sep and attribute):
            raise ValueError(
                f"BackendSpec.target: expected 'package.module:attribute', found {self.target!r}"
            )
        if isinstance(self.requires, str) or not all(
            isinstance(r, str) and r and "." not in r for r in self.requires
        ):
            raise ValueError(
                "BackendSpec.requires: expected a tuple of top-level module names, "
                f"found {self.requires!r}"
            )


@dataclass(frozen=True, eq=False, kw_only=True)
class TrainingData:
    """Everything a backend needs to train, prepared by core from an NPZ dataset."""

    groups: GroupedData
    """Grouped, normalised diffraction (see :class:`ptycho_core.grouping.GroupedData`)."""
    probe: np.ndarray
    """Normalised probe P̃, complex64 (N, N)."""
    intensity_scale: float
    """s₀: normalised amplitude × s₀ = amplitude in sqrt-photon units."""

    @property
    def N(self) -> int:
        return self.groups.N

    @property
    def n_groups(self) -> int:
        return self.groups.n_groups

    def check_fits(self, config: TrainingConfig, backend: str) -> None:
        """Raise ``ValueError`` unless this data can train ``config``'s model.

        The protocol requires these checks before the first epoch: groups of the config's
        N and gridsize², a finite s₀ > 0, an (N, N) probe and, for a supervised model,
        ground-truth ``object_patches``. Every backend can call this.
        """
        N, channels = config.model.N, config.model.channels
        if self.N != N or self.groups.channels != channels:
            raise DataContractError(
                f"{backend}: training data: expected groups of {N}×{N}×{channels} "
                f"(TrainingConfig.model N, gridsize²), found "
                f"{self.N}×{self.N}×{self.groups.channels}"
            )
        if config.model.model_type == "supervised" and self.groups.object_patches is None:
            raise DataContractError(
                f"{backend}: training data: expected object_patches (ground truth) for a "
                "'supervised' model, found none"
            )
        if not (np.isfinite(self.intensity_scale) and self.intensity_scale > 0):
            raise DataContractError(
                f"{backend}: training data: expected intensity_scale > 0, "
                f"found {self.intensity_scale!r}"
            )
        probe_shape = np.shape(self.probe)
        if probe_shape != (N, N):
            raise DataContractError(
                f"{backend}: training data: expected a probe of shape ({N}, {N}), "
                f"found {probe_shape}"
            )

    def split(self, validation_fraction: float) -> tuple[TrainingData, TrainingData | None]:
        """The first groups for training and the last ``validation_fraction`` for validation.

        Returns ``(self, None)`` when the fraction leaves no validation group.
        """
        n_val = int(self.n_groups * validation_fraction)
        if n_val == 0 or n_val >= self.n_groups:
            return self, None
        n_train = self.n_groups - n_val
        head = self.groups.select(np.arange(n_train))
        tail = self.groups.select(np.arange(n_train, self.n_groups))
        return (
            TrainingData(groups=head, probe=self.probe, intensity_scale=self.intensity_scale),
            TrainingData(groups=tail, probe=self.probe, intensity_scale=self.intensity_scale),
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class TrainedModel:
    """A trained model as core sees it: shared metadata plus an opaque backend payload."""

    backend: str
    """Name of the backend that produced (and can run) ``network``."""
    config: TrainingConfig
    """The configuration it was trained with; ``config.model`` is the architecture."""
    probe: np.ndarray
    """Normalised training probe P̃, complex64 (N, N)."""
    intensity_scale: float
    """s₀ used in training (stored in the bundle manifest)."""
    network: Any
    """Backend-private state (a module, a Keras model, fitted arrays...)."""
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Per-epoch loss values by name, as reported to the hooks."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """JSON-compatible values the backend wants in the manifest (e.g. the output gain)."""

    @property
    def N(self) -> int:
        return self.config.model.N

    @property
    def gridsize(self) -> int:
        return self.config.model.gridsize

    def payload(self, backend: str, kind: type[_Payload]) -> _Payload:
        """``network`` for backend ``backend``, after checking that it trained this model.

        Raises :class:`~ptycho_core.errors.BackendMismatchError` for another backend's
        model (the protocol's cross-backend rule) and ``TypeError`` for a foreign payload.
        """
        if self.backend != backend:
            raise BackendMismatchError(
                f"model was trained by backend {self.backend!r}; backend {backend!r} cannot run it"
            )
        if not isinstance(self.network, kind):
            raise TypeError(
                f"TrainedModel.network: expected a {kind.__module__}.{kind.__qualname__} for "
                f"backend {backend!r}, found {type(self.network).__name__}"
            )
        return self.network

    def check_refinable(self, config: TrainingConfig, backend: str) -> None:
        """Raise unless ``backend`` may continue training this model with ``config``.

        What ``train_from`` must check before the first epoch: the model is this backend's
        (:class:`~ptycho_core.errors.BackendMismatchError` otherwise) and ``config.model``
        is the model's architecture (``ValueError`` naming the differing fields and both
        values otherwise): a refinement changes weights, never the architecture.
        """
        if self.backend != backend:
            raise BackendMismatchError(
                f"model was trained by backend {self.backend!r}; backend {backend!r} cannot "
                "continue training it"
            )
        if config.model != self.config.model:
            mine, theirs = self.config.model.to_dict(), config.model.to_dict()
            differences = ", ".join(
                f"{name}: {theirs[name]!r} in the config, {mine[name]!r} in the model"
                for name in mine
                if mine[name] != theirs[name]
            )
            raise ConfigError(
                f"{backend}: TrainingConfig.model differs from the trained model's architecture "
                f"({differences}); a refinement keeps the model's architecture"
            )

    def check_groups(self, data: GroupedData) -> None:
        """Raise :class:`~ptycho_core.errors.DataContractError` unless ``data`` fits the model.

        Grouped data must be (B, N, N, C) with the model's N and C = gridsize², and its
        ``coords_relative`` (B, 1, 2, C): what ``infer`` must check before running.
        """
        N, channels = self.N, self.config.model.channels
        B = data.n_groups
        if data.diffraction.ndim != 4 or data.N != N or data.diffraction.shape[2] != N:
            raise DataContractError(
                f"grouped data 'diffraction': expected shape (B, {N}, {N}, {channels}) for the "
                f"model's N={N}, gridsize={self.gridsize}, found {data.diffraction.shape}"
            )
        if data.channels != channels:
            raise DataContractError(
                f"grouped data 'diffraction': expected {channels} channels (the model's gridsize "
                f"{self.gridsize}), found {data.channels} (gridsize {data.gridsize})"
            )
        if data.coords_relative.shape != (B, 1, 2, channels):
            raise DataContractError(
                f"grouped data 'coords_relative': expected shape ({B}, 1, 2, {channels}), found "
                f"{data.coords_relative.shape}"
            )


@runtime_checkable
class ReconstructionBackend(Protocol):
    """The four operations every backend implements (specs/backend-protocol.md)."""

    name: str

    def train(
        self, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Fit a model; call ``hooks.ptycho_train_start``, ``ptycho_epoch_end`` each epoch
        and ``ptycho_train_end``. Deterministic for a given ``config.seed`` on CPU."""
        ...

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: HookRelay
    ) -> np.ndarray:
        """Object patches at the group centres: complex64 of shape (B, N, N, 1).

        Calls ``hooks.ptycho_infer_progress`` as batches complete. Raises ``ValueError``
        if ``data`` does not match the model's N or gridsize."""
        ...

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        """Write a bundle (via :func:`ptycho_core.bundle.write_bundle`), atomically."""
        ...

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        """Read a bundle written by this backend (via :func:`ptycho_core.bundle.read_bundle`);
        a bundle of another backend raises :class:`~ptycho_core.errors.BackendMismatchError`."""
        ...


@runtime_checkable
class SupportsWarmStart(Protocol):
    """Optional capability: continue training a trained model (specs/backend-protocol.md §9.1).

    The physics loss needs no ground truth, so a trained network can be refined on the
    very scan it is about to reconstruct.
    """

    def train_from(
        self, model: TrainedModel, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Continue training ``model`` (weights, output gain, probe state) on ``data`` for
        ``config.nepochs`` epochs with ``config``'s optimiser settings; return a new model and
        leave ``model`` unchanged. ``config.model`` must equal ``model.config.model``
        (``ValueError``); another backend's model raises ``BackendMismatchError``. Hooks are
        called as in ``train``; deterministic for a given ``config.seed`` on the CPU."""
        ...


@runtime_checkable
class SupportsInitialObject(Protocol):
    """Optional capability: an iterative solver started from a given object
    (specs/backend-protocol.md §9.2), e.g. a network's stitched reconstruction."""

    def infer_from(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        initial_object: Stitched,
        *,
        hooks: HookRelay,
    ) -> np.ndarray:
        """As ``infer`` (complex64 (B, N, N, 1) patches at the group centres), starting
        from ``initial_object`` instead of the backend's own flat start.

        The object is in object pixels (``origin`` locates its image); its amplitude scale
        and global phase are arbitrary, so the backend fits one scalar to the data before
        iterating; pixels it does not cover get the backend's own flat start."""
        ...

    def model_from_probe(self, probe: np.ndarray, config: TrainingConfig) -> TrainedModel:
        """A ready model without training: ``probe`` is the normalised P̃ (N, N) complex64
        (e.g. a network model's ``probe``), ``config.nepochs`` the iteration count."""
        ...


@runtime_checkable
class SupportsForward(Protocol):
    """Optional capability: the bare forward pass on one batch (specs/backend-protocol.md §5),
    without hooks, batching or input checks, so ``ptycho bench`` can time the model alone."""

    def forward(
        self,
        model: TrainedModel,
        diffraction: np.ndarray,
        coords_relative: np.ndarray,
        *,
        precision: str = "32",
        accelerator: str = "auto",
    ) -> np.ndarray:
        """Complex64 (B, N, N, 1) patches for normalised (B, N, N, C) float32 patterns."""
        ...


@runtime_checkable
class SupportsArrayExport(Protocol):
    """Optional capability: framework-neutral weights (specs/backend-protocol.md §8), the
    source side of a conversion between backends."""

    def export_arrays(self, model: TrainedModel) -> dict[str, np.ndarray]:
        """The model's weights by neutral name, in the neutral layouts of §8."""
        ...


@runtime_checkable
class SupportsArrayImport(Protocol):
    """Optional capability: a model built from framework-neutral weights (§8), the target
    side of a conversion between backends."""

    def import_arrays(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        config: TrainingConfig,
        probe: np.ndarray,
        intensity_scale: float,
        history: Mapping[str, Any] | None = None,
    ) -> TrainedModel:
        """A trained model of this backend holding ``arrays``; a missing, unexpected or
        mis-shaped array raises ``ValueError`` naming it."""
        ...


@runtime_checkable
class DeclaresCapabilities(Protocol):
    """A backend that declares features it does not offer (§5), e.g.
    ``capabilities = {"deterministic": False}``; every known name defaults to True."""

    capabilities: Mapping[str, bool]


def declared_capabilities(backend: Any) -> dict[str, bool]:
    """``KNOWN_CAPABILITIES`` all True, overridden by what ``backend`` declares."""
    merged = dict.fromkeys(KNOWN_CAPABILITIES, True)
    if isinstance(backend, DeclaresCapabilities) and isinstance(backend.capabilities, Mapping):
        merged.update({k: v for k, v in backend.capabilities.items() if isinstance(v, bool)})
    return merged

"""Backend-agnostic workflows under the names users of upstream PtychoPINN know.

Each workflow resolves its backend through :mod:`ptycho_core.backend_selector` *before*
it reads any data, so a missing framework fails fast. Everything shared by all
backends happens here, once: reading and validating the NPZ, grouping, the one
normalisation, the probe normalisation, the intensity scale, and stitching.

Two workflows use the optional backend capabilities (specs/backend-protocol.md §9):
:func:`refine_model` fine-tunes a trained model on the data it is about to reconstruct,
and :func:`reconstruct_hybrid` runs a network, then an iterative solver started from the
network's object. A backend without the capability raises
:class:`~ptycho_core.errors.CapabilityError`; nothing falls back silently.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ptycho_core.backend_options import declared_options, resolve_backend_options
from ptycho_core.backend_selector import select_backend
from ptycho_core.bundle import read_manifest
from ptycho_core.config import BackendOptions, InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.data import PtychoData, load_npz
from ptycho_core.errors import (
    BackendLoadError,
    BackendMismatchError,
    CapabilityError,
    ConfigError,
    DataContractError,
)
from ptycho_core.grouping import GroupedData, make_groups
from ptycho_core.hooks import HookRelay, make_plugin_manager
from ptycho_core.physics import normalize_probe
from ptycho_core.protocol import (
    ReconstructionBackend,
    SupportsArrayImport,
    SupportsInitialObject,
    SupportsWarmStart,
    TrainedModel,
    TrainingData,
)
from ptycho_core.stitching import Stitched, merge_stitched, stitch_patches

__all__ = [
    "Reconstruction",
    "check_backend_options",
    "get_backend",
    "intensity_scale",
    "load_bundle",
    "load_inference_bundle",
    "prepare_inference_data",
    "prepare_training_data",
    "reassemble_cdi_image",
    "reconstruct",
    "reconstruct_hybrid",
    "refine_model",
    "refinement_config",
    "require_capability",
    "run_cdi_example",
    "save_bundle",
    "save_model",
    "summarize_history",
    "train_cdi_model",
]

DatasetLike = PtychoData | str | os.PathLike[str]

_CAPABILITIES: Mapping[type, tuple[str, str]] = {
    SupportsWarmStart: ("refine a trained model", "train_from"),
    SupportsInitialObject: ("start from an initial object", "infer_from and model_from_probe"),
    SupportsArrayImport: ("build a model from framework-neutral weights", "import_arrays"),
}


@dataclass(frozen=True, eq=False, kw_only=True)
class Reconstruction:
    """A stitched reconstruction and how it was made."""

    stitched: Stitched
    """Complex object on its canvas, with the overlap weights and the canvas origin."""
    backend: str
    """Backend that predicted the patches."""
    n_groups: int
    """Number of groups predicted."""

    @property
    def amplitude(self) -> np.ndarray:
        return self.stitched.amplitude

    @property
    def phase(self) -> np.ndarray:
        return self.stitched.phase


def intensity_scale(nphotons: float, N: int) -> float:
    """s₀ = sqrt(nphotons)/(N/2): normalised amplitude × s₀ is amplitude in sqrt-photons.

    Equal to the dataset form sqrt(nphotons / mean Σ X_n²) because the normalisation
    makes mean Σ X_n² = (N/2)² (specs/model.md §6.2; one formula for all backends).
    """
    return math.sqrt(nphotons) / (N / 2)


def _as_dataset(data: DatasetLike) -> PtychoData:
    return data if isinstance(data, PtychoData) else load_npz(data)


def _hooks_or_default(hooks: HookRelay | None) -> HookRelay:
    return make_plugin_manager().hook if hooks is None else hooks


def get_backend(name: str) -> ReconstructionBackend:
    """The backend registered as ``name``: the one place core turns a name into a backend.

    The selector's errors pass through (unknown name, missing framework, conflict), so a
    caller can resolve a backend first and fail before reading any data.
    """
    return select_backend(name)


def require_capability(backend: ReconstructionBackend | str, capability: type) -> Any:
    """``backend`` (selected first when given by name) if it implements ``capability``.

    ``capability`` is :class:`~ptycho_core.protocol.SupportsWarmStart` or
    :class:`~ptycho_core.protocol.SupportsInitialObject`; a backend without it raises
    :class:`~ptycho_core.errors.CapabilityError` (e.g. ``backend epie cannot refine a
    trained model (it has no train_from)``), so callers can check before any work is done.
    """
    what, methods = _CAPABILITIES[capability]
    selected = select_backend(backend) if isinstance(backend, str) else backend
    if not isinstance(selected, capability):
        raise CapabilityError(f"backend {selected.name} cannot {what} (it has no {methods})")
    return selected


def check_backend_options(
    backend: ReconstructionBackend | str,
    options: Mapping[str, Any],
    kind: Literal["training", "inference"],
) -> dict[str, Any]:
    """``options`` resolved against what ``backend`` (selected first when given by name)
    declares for ``kind``, so that a request is refused before any work is done.

    Raises :class:`~ptycho_core.errors.ConfigError` as the config and the backend itself
    will (a name or value no option may have, a name the backend does not declare, a value
    its check refuses); the backend still resolves its options when it runs.
    """
    selected = select_backend(backend) if isinstance(backend, str) else backend
    field = f"{'TrainingConfig' if kind == 'training' else 'InferenceConfig'}.backend_options"
    checked = (
        options if isinstance(options, BackendOptions) else BackendOptions(options, field=field)
    )
    return resolve_backend_options(
        selected.name, checked, declared_options(selected, kind), field=field
    )


def prepare_training_data(
    data: PtychoData, config: TrainingConfig, *, probe: np.ndarray | None = None
) -> TrainingData:
    """Group, normalise and scale a dataset for ``backend.train``.

    ``probe`` replaces the dataset's probe by an already normalised P̃ (a refinement keeps
    the probe its model was trained with: the network is tied to it).
    """
    model = config.model
    if data.N != model.N:
        raise DataContractError(
            f"{data.source}: key 'diffraction': expected patterns of {model.N}×{model.N} "
            f"(TrainingConfig.model.N), found {data.N}×{data.N}"
        )
    groups = make_groups(
        data,
        model.gridsize,
        n_groups=config.n_groups,
        neighbor_count=config.neighbor_count,
        seed=config.seed,
        sequential=config.sequential_sampling,
    )
    if config.model.model_type == "supervised" and groups.object_patches is None:
        raise DataContractError(
            f"{data.source}: key 'objectGuess': expected a ground-truth object for a "
            "'supervised' model, found none"
        )
    return TrainingData(
        groups=groups,
        probe=(
            normalize_probe(data.probe, model.probe_scale)
            if probe is None
            else np.asarray(probe, dtype=np.complex64)
        ),
        intensity_scale=intensity_scale(config.nphotons, model.N),
    )


def prepare_inference_data(
    data: PtychoData, model: TrainedModel, config: InferenceConfig
) -> GroupedData:
    """Group and normalise a dataset the way ``model`` expects its input."""
    if data.N != model.N:
        raise DataContractError(
            f"{data.source}: key 'diffraction': expected patterns of {model.N}×{model.N} "
            f"(the model's N), found {data.N}×{data.N}"
        )
    return make_groups(
        data,
        model.gridsize,
        n_groups=config.n_groups,
        neighbor_count=max(config.neighbor_count, model.config.model.channels),
        seed=config.seed,
    )


def train_cdi_model(
    train_data: DatasetLike,
    test_data: DatasetLike | None,
    config: TrainingConfig,
    *,
    hooks: HookRelay | None = None,
) -> dict[str, Any]:
    """Train ``config.backend`` on ``train_data``.

    Returns a results dict with ``model`` (:class:`TrainedModel`), ``history``,
    ``backend``, ``intensity_scale`` and ``train_data`` (the prepared
    :class:`TrainingData`); ``test_data`` (a :class:`PtychoData`) when given.
    """
    backend = select_backend(config.backend)
    dataset = _as_dataset(train_data)
    training = prepare_training_data(dataset, config)
    model = backend.train(training, config, hooks=_hooks_or_default(hooks))
    results: dict[str, Any] = {
        "model": model,
        "history": dict(model.history),
        "backend": backend.name,
        "intensity_scale": training.intensity_scale,
        "train_data": training,
    }
    if test_data is not None:
        results["test_data"] = _as_dataset(test_data)
    return results


def refinement_config(model: TrainedModel, epochs: int) -> TrainingConfig:
    """The default settings of :func:`refine_model`: the model's training config for
    ``epochs`` epochs on one group per position, without a validation split (every
    pattern of the scan is to be fitted); warmup and schedule as in training."""
    return model.config.replace(nepochs=epochs, n_groups=None, validation_split=0.0)


def refine_model(
    model: TrainedModel,
    data: DatasetLike,
    *,
    epochs: int,
    config: TrainingConfig | None = None,
    hooks: HookRelay | None = None,
    backend: ReconstructionBackend | None = None,
) -> TrainedModel:
    """Continue training ``model`` on ``data``, the scan it is about to reconstruct.

    The physics loss needs no ground truth, so the refined model fits this very scan.
    ``config`` defaults to :func:`refinement_config`; ``epochs`` sets its ``nepochs``. The
    data are grouped with the model's architecture and normalised as for training, with
    the model's own probe (the network is tied to it) and s₀ from ``config.nphotons``
    (default: the model's). Returns a new model; ``model`` is unchanged. A backend without
    ``train_from`` raises :class:`~ptycho_core.errors.CapabilityError`, never a retraining
    from scratch.
    """
    backend = require_capability(model.backend if backend is None else backend, SupportsWarmStart)
    config = refinement_config(model, epochs) if config is None else config.replace(nepochs=epochs)
    if config.backend != model.backend:
        raise BackendMismatchError(
            f"model was trained by backend '{model.backend}', but the refinement's "
            f"TrainingConfig.backend is '{config.backend}'"
        )
    training = prepare_training_data(_as_dataset(data), config, probe=model.probe)
    return backend.train_from(model, training, config, hooks=_hooks_or_default(hooks))


def reconstruct(
    model: TrainedModel,
    data: DatasetLike,
    config: InferenceConfig | None = None,
    *,
    hooks: HookRelay | None = None,
    backend: ReconstructionBackend | None = None,
    initial_object: Stitched | None = None,
    shape: tuple[int, int] | None = None,
    chunks: int = 1,
    on_partial: Callable[[Stitched, int, int], None] | None = None,
) -> Reconstruction:
    """Predict object patches with ``model``'s backend and stitch them.

    The canvas is ``shape`` (an object frame, origin (0, 0)) when given, else the
    ground-truth object's frame when the dataset has an ``objectGuess`` (so the result
    compares pixel for pixel), else the bounding box of the scan, with its origin
    recorded in :class:`~ptycho_core.stitching.Stitched`. With ``chunks`` > 1 the groups
    are inferred in that many parts and ``on_partial(stitched_so_far, done, total)`` is
    called after each (a viewer can show the object as it grows); the result is the
    same as in one part. With ``initial_object`` the backend's ``infer_from`` starts from
    that object (:class:`~ptycho_core.errors.CapabilityError` for a backend without it);
    an iterative solver needs every group at once, so it runs in one part.
    """
    config = InferenceConfig() if config is None else config
    if config.backend is not None and config.backend != model.backend:
        raise BackendMismatchError(
            f"model was trained by backend '{model.backend}', but InferenceConfig.backend "
            f"is '{config.backend}'"
        )
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ConfigError(f"reconstruct: chunks: expected an integer >= 1, found {chunks!r}")
    backend = select_backend(model.backend) if backend is None else backend
    if initial_object is not None:
        backend = require_capability(backend, SupportsInitialObject)
        chunks = 1
    dataset = _as_dataset(data)
    groups = prepare_inference_data(dataset, model, config)
    hooks = _hooks_or_default(hooks)
    if shape is None and dataset.object is not None:
        shape = dataset.object.shape
    total = groups.n_groups
    stitched: Stitched | None = None
    done = 0
    for part in np.array_split(np.arange(total), min(chunks, total)):
        selected = groups if part.size == total else groups.select(part)
        if initial_object is None:
            patches = backend.infer(model, selected, config, hooks=hooks)
        else:
            patches = backend.infer_from(model, selected, config, initial_object, hooks=hooks)
        centres = selected.coords_offsets[:, 0, :, 0]
        piece = stitch_patches(
            patches, centres[:, 0], centres[:, 1], M=config.stitch_size, shape=shape
        )
        stitched = piece if stitched is None else merge_stitched(stitched, piece)
        done += part.size
        if on_partial is not None:
            on_partial(stitched, done, total)
    assert stitched is not None  # prepare_inference_data refuses an empty scan
    return Reconstruction(stitched=stitched, backend=backend.name, n_groups=total)


def reconstruct_hybrid(
    model: TrainedModel,
    data: DatasetLike,
    then: str | TrainedModel,
    *,
    iterations: int | None = None,
    config: InferenceConfig | None = None,
    hooks: HookRelay | None = None,
    then_options: Mapping[str, Any] | None = None,
) -> tuple[Reconstruction, Reconstruction]:
    """``model``'s reconstruction, then an iterative solver's started from it: ``(first, final)``.

    A network gives a good object in one fast pass; a few solver iterations from it then
    fit the data themselves. ``then`` is a backend name, whose ``model_from_probe`` builds
    a solver for ``model``'s probe (``iterations``, default ``TrainingConfig``'s ``nepochs``), or a
    trained model of such a backend (``iterations`` overrides its own count). ``config``
    drives the first pass; the second uses its grouping, seed and stitching, and
    ``then_options`` as its ``InferenceConfig.backend_options`` (the solver's own options;
    the model ``model_from_probe`` builds gets none). A solver
    without ``infer_from`` raises :class:`~ptycho_core.errors.CapabilityError` before
    anything runs.
    """
    name = then.backend if isinstance(then, TrainedModel) else then
    solver = require_capability(name, SupportsInitialObject)
    config = InferenceConfig() if config is None else config
    second = InferenceConfig(
        backend=name,
        n_groups=config.n_groups,
        neighbor_count=config.neighbor_count,
        seed=config.seed,
        stitch_size=config.stitch_size,
        iterations=iterations if isinstance(then, TrainedModel) else None,
        backend_options={} if then_options is None else then_options,
    )
    check_backend_options(solver, second.backend_options, "inference")  # before any work
    dataset = _as_dataset(data)
    first = reconstruct(model, dataset, config, hooks=hooks)
    if isinstance(then, TrainedModel):
        solver_model = then
    else:
        solver_config = TrainingConfig(
            backend=name,
            model=ModelConfig(N=model.N, probe_scale=model.config.model.probe_scale),
            nphotons=model.config.nphotons,
            seed=config.seed,
        )
        if iterations is not None:
            solver_config = solver_config.replace(nepochs=iterations)
        solver_model = solver.model_from_probe(model.probe, solver_config)
    final = reconstruct(
        solver_model, dataset, second, hooks=hooks, backend=solver, initial_object=first.stitched
    )
    return first, final


def reassemble_cdi_image(
    test_data: DatasetLike,
    model: TrainedModel,
    config: InferenceConfig | None = None,
    M: int | None = None,
    *,
    hooks: HookRelay | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Reconstruct and stitch ``test_data``: ``(amplitude, phase, results)``.

    ``M`` (the stitched crop size) overrides ``config.stitch_size`` when given, as
    upstream's argument of the same name does.
    """
    config = InferenceConfig() if config is None else config
    if M is not None:
        config = config.replace(stitch_size=M)
    result = reconstruct(model, test_data, config, hooks=hooks)
    results = {
        "backend": result.backend,
        "reconstruction": result,
        "obj_tensor_full": result.stitched.image,
        "n_groups": result.n_groups,
    }
    return result.amplitude, result.phase, results


def run_cdi_example(
    train_data: DatasetLike,
    test_data: DatasetLike | None,
    config: TrainingConfig,
    M: int = 20,
    do_stitching: bool = True,
    *,
    hooks: HookRelay | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """Train, then (with test data and ``do_stitching``) reconstruct the test set.

    Returns ``(amplitude, phase, results)`` with ``results['backend']`` naming the
    backend that did the work; amplitude and phase are ``None`` without stitching.
    """
    results = train_cdi_model(train_data, test_data, config, hooks=hooks)
    amplitude = phase = None
    if do_stitching and test_data is not None:
        inference = InferenceConfig(backend=config.backend, stitch_size=M, seed=config.seed)
        amplitude, phase, stitched = reassemble_cdi_image(
            results["test_data"], results["model"], inference, hooks=hooks
        )
        results.update({k: v for k, v in stitched.items() if k != "backend"})
    return amplitude, phase, results


def load_bundle(path: str | os.PathLike[str]) -> TrainedModel:
    """Load any bundle with the backend named in its manifest."""
    manifest = read_manifest(path)
    model = select_backend(manifest["backend"]).load(path)
    if not isinstance(model, TrainedModel):
        raise BackendLoadError(
            f"backend {manifest['backend']!r}: load({str(path)!r}) returned "
            f"{type(model).__name__}, not a TrainedModel"
        )
    return model


def save_bundle(model: TrainedModel, path: str | os.PathLike[str]) -> None:
    """Save ``model`` with the backend that trained it (``model.backend``)."""
    select_backend(model.backend).save(model, path)


def load_inference_bundle(
    path: str | os.PathLike[str], *, backend: str | None = None
) -> tuple[TrainedModel, TrainingConfig]:
    """Load a bundle with the backend named in its manifest: ``(model, training config)``.

    With ``backend`` given, that backend must be the one that wrote the bundle;
    otherwise :class:`~ptycho_core.errors.BackendMismatchError` names both.
    """
    model = load_bundle(path) if backend is None else select_backend(backend).load(path)
    return model, model.config


def save_model(model: TrainedModel, path: str | os.PathLike[str]) -> Path:
    """Save ``model`` as a bundle with its own backend; returns the path."""
    save_bundle(model, path)
    return Path(path)


def summarize_history(history: Mapping[str, Any]) -> dict[str, float]:
    """The last value of each loss series (for logs and JSON outputs)."""
    return {name: float(values[-1]) for name, values in history.items() if len(values)}

"""Converting a trained model from one backend to another (``ptycho convert``).

Conversion goes through the protocol only: the source backend ``load``s the bundle and
``export_arrays`` its weights as framework-neutral named numpy arrays
(specs/backend-protocol.md, "Framework-neutral weights"); the target backend
``import_arrays`` them into its own network and ``save``s a bundle. Core never imports a
framework, and neither backend imports the other.

The conversion is checked, not trusted: the exported arrays must be finite real arrays,
the target must accept every one (it names a missing, unexpected or misshapen array), and
when the target can export too, exporting the converted model must give back exactly the
arrays that went in, so an array the target silently ignored cannot go unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from ptycho_core.bundle import read_manifest
from ptycho_core.errors import PtychoError
from ptycho_core.protocol import (
    ReconstructionBackend,
    SupportsArrayExport,
    SupportsArrayImport,
    TrainedModel,
)
from ptycho_core.upstream import read_upstream_archive
from ptycho_core.workflows import get_backend

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METHOD",
    "IMPORT_METHOD",
    "UPSTREAM_BACKEND",
    "ConversionError",
    "checked_import",
    "checked_intensity_scale",
    "convert_bundle",
    "convert_model",
    "export_bundle",
    "import_upstream",
]

EXPORT_METHOD = "export_arrays"
IMPORT_METHOD = "import_arrays"
EXPORT_FORMATS: Mapping[str, str] = {"onnx": "onnx"}
"""``ptycho export --format`` → the deployment backend whose bundles hold that format."""
UPSTREAM_BACKEND = "tensorflow"
"""The backend an upstream archive is imported into by default: its own framework's."""


class ConversionError(PtychoError, ValueError):
    """A model cannot be converted between two backends (missing methods, arrays that do not fit)."""


BackendLike = str | ReconstructionBackend


def _backend(backend: BackendLike) -> ReconstructionBackend:
    return get_backend(backend) if isinstance(backend, str) else backend


def _backend_name(backend: BackendLike) -> str:
    """The name of ``backend``, without selecting (importing) one given by name."""
    return backend if isinstance(backend, str) else backend.name


_ROLES = {"source": SupportsArrayExport, "target": SupportsArrayImport}


def _method(backend: Any, method: str, role: str) -> Any:
    """``backend``'s ``method`` when it has the capability the ``role`` needs."""
    if not isinstance(backend, _ROLES[role]) or not callable(getattr(backend, method)):
        raise ConversionError(
            f"backend {backend.name!r} cannot be the {role} of a conversion: it has no "
            f"{method!r} method (framework-neutral weights are an optional part of the "
            "protocol, specs/backend-protocol.md §8; a conversion needs export_arrays on the "
            "source backend and import_arrays on the target backend)"
        )
    return getattr(backend, method)


def _value_problem(array: np.ndarray) -> str:
    """What is wrong with an array's values for a weight ('' when nothing), as a message tail."""
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        return f": expected real numbers, found dtype {array.dtype}"
    if not np.all(np.isfinite(array)):
        return " holds NaN or inf"
    return ""


def checked_intensity_scale(value: Any) -> float:
    """``import_arrays``' ``intensity_scale`` as a float; ``ValueError`` unless finite and > 0."""
    if not (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and np.isfinite(value)
        and value > 0
    ):
        raise ValueError(f"import_arrays: expected intensity_scale > 0, found {value!r}")
    return float(value)


def checked_import(arrays: Any, expected: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """What a backend's ``import_arrays`` starts with: its arguments checked, as float32.

    ``expected`` maps each framework-neutral name the architecture needs to its neutral
    shape (specs/backend-protocol.md §8). Raises ``ValueError`` naming the array for one
    that is missing, unexpected, misshapen, not real or not finite, so every backend
    refuses the same inputs with the same words.
    """
    if not isinstance(arrays, Mapping):
        raise ValueError(
            f"import_arrays: expected a mapping of name to array, found {type(arrays).__name__}"
        )
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise ValueError(
            f"import_arrays: array {missing[0]!r} is missing (expected shape {expected[missing[0]]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    unexpected = sorted(str(name) for name in arrays if name not in expected)
    if unexpected:
        raise ValueError(
            f"import_arrays: array {unexpected[0]!r} does not belong to the architecture of the "
            "config (a different model_type, pad_object, probe_big or probe_trainable?)"
        )
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.asarray(arrays[name])
        if array.shape != tuple(shape):
            raise ValueError(
                f"import_arrays: array {name!r}: expected shape {tuple(shape)}, found {array.shape}"
            )
        problem = _value_problem(array)
        if problem:
            raise ValueError(f"import_arrays: array {name!r}{problem}")
        checked[name] = array.astype(np.float32)
    return checked


def _checked_arrays(arrays: Any, source: str) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise ConversionError(
            f"backend {source!r}: export_arrays returned {type(arrays).__name__}, not a mapping "
            "of name to array"
        )
    checked: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        if not isinstance(name, str) or not name:
            raise ConversionError(
                f"backend {source!r}: export_arrays gave a bad array name {name!r}"
            )
        if not isinstance(array, np.ndarray):
            raise ConversionError(
                f"backend {source!r}: array {name!r} is a {type(array).__name__}, not a numpy array"
            )
        problem = _value_problem(array)
        if problem:
            raise ConversionError(f"backend {source!r}: array {name!r}{problem}")
        checked[name] = array
    return checked


def _check_round_trip(
    sent: Mapping[str, np.ndarray], back: Mapping[str, np.ndarray], target: str
) -> None:
    """Exporting the converted model must give back exactly the arrays imported."""
    missing = sorted(set(sent) - set(back))
    if missing:
        raise ConversionError(
            f"backend {target!r} dropped array {missing[0]!r}: its import ignored it"
        )
    extra = sorted(set(back) - set(sent))
    if extra:
        raise ConversionError(
            f"backend {target!r} exports array {extra[0]!r}, which was not imported"
        )
    for name, array in sent.items():
        theirs = np.asarray(back[name])
        if theirs.shape != array.shape or not np.array_equal(
            theirs.astype(np.float32), array.astype(np.float32)
        ):
            raise ConversionError(
                f"backend {target!r}: array {name!r} changed during the import (shape "
                f"{array.shape} → {theirs.shape}, or different values)"
            )


def convert_model(
    model: TrainedModel,
    source: BackendLike,
    target: BackendLike,
    *,
    backend_options: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """``model`` (of backend ``source``) as a model of backend ``target``, in memory.

    Backends are names (selected through the entry points) or backend objects. The
    converted model's config carries ``backend_options`` (the target's settings, e.g. an
    export's quantisation; none by default): the source's own options mean nothing to the
    target, so they do not travel.
    """
    source_backend, target_backend = _backend(source), _backend(target)
    export = _method(source_backend, EXPORT_METHOD, "source")
    _method(target_backend, IMPORT_METHOD, "target")
    if model.backend != source_backend.name:
        raise ConversionError(
            f"the model was trained by backend {model.backend!r}, not by the source backend "
            f"{source_backend.name!r}"
        )
    arrays = _checked_arrays(export(model), source_backend.name)
    config = model.config.replace(
        backend=target_backend.name, backend_options=dict(backend_options or {})
    )
    return _imported(
        target_backend,
        arrays,
        origin=f"backend {source_backend.name!r}",
        config=config,
        probe=np.asarray(model.probe),
        intensity_scale=float(model.intensity_scale),
        history=dict(model.history),
    )


def _imported(
    target: ReconstructionBackend, arrays: dict[str, np.ndarray], *, origin: str, **given: Any
) -> TrainedModel:
    """``target.import_arrays(arrays, **given)``, checked: refusals become conversion errors
    naming the ``origin`` of the weights, the result must be a model of ``target``, and
    exporting it (when ``target`` can) must give back exactly ``arrays``."""
    import_ = _method(target, IMPORT_METHOD, "target")
    try:
        imported = import_(arrays, **given)
    except ValueError as error:
        raise ConversionError(
            f"backend {target.name!r} cannot import the weights of {origin}: {error}"
        ) from error
    if not isinstance(imported, TrainedModel) or imported.backend != target.name:
        raise ConversionError(
            f"backend {target.name!r}: import_arrays returned "
            f"{type(imported).__name__} of backend {getattr(imported, 'backend', None)!r}, not a "
            f"TrainedModel of backend {target.name!r}"
        )
    if isinstance(target, SupportsArrayExport):
        _check_round_trip(arrays, target.export_arrays(imported), target.name)
    return imported


def convert_bundle(
    source_path: str | os.PathLike[str],
    target_backend: BackendLike,
    output_path: str | os.PathLike[str],
    *,
    source_backend: BackendLike | None = None,
    backend_options: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Convert the bundle at ``source_path`` to ``target_backend`` and save it at ``output_path``.

    The source backend is the one named in the bundle's manifest (or ``source_backend``,
    which must be it). Fails before loading anything when a backend lacks
    ``export_arrays`` / ``import_arrays``. ``backend_options`` are the target's settings
    (:func:`convert_model`). Returns the converted model; the write is atomic.
    """
    manifest = read_manifest(source_path)
    source = _backend(manifest["backend"] if source_backend is None else source_backend)
    target = _backend(target_backend)
    _method(source, EXPORT_METHOD, "source")
    _method(target, IMPORT_METHOD, "target")
    model = source.load(source_path)
    converted = convert_model(model, source, target, backend_options=backend_options)
    target.save(converted, output_path)
    return converted


def export_bundle(
    source_path: str | os.PathLike[str],
    format: str,
    output_path: str | os.PathLike[str],
    *,
    options: Mapping[str, Any] | None = None,
) -> TrainedModel:
    """Export the trained network at ``source_path`` for deployment as ``format`` ('onnx').

    An export is a conversion to the deployment backend of that format
    (:data:`EXPORT_FORMATS`): the source's framework-neutral weights become, for 'onnx', an
    ONNX graph that backend ``onnx`` runs without any framework. ``options`` are the
    export settings that backend declares (e.g. ``{"quantize": "int8"}``).
    """
    if format not in EXPORT_FORMATS:
        raise ConversionError(
            f"export format: expected one of {', '.join(map(repr, EXPORT_FORMATS))}, "
            f"found {format!r}"
        )
    return convert_bundle(source_path, EXPORT_FORMATS[format], output_path, backend_options=options)


def import_upstream(
    archive_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    backend: BackendLike | None = None,
    ignore: Collection[str] = (),
) -> TrainedModel:
    """Import the network of an upstream PtychoPINN archive (``wts.h5.zip``) as a bundle.

    The archive is read as data (:func:`ptycho_core.upstream.read_upstream_archive`: no
    pickled code runs, no model is deserialised) before any backend is selected; its weights
    go to ``backend`` (default :data:`UPSTREAM_BACKEND`, the framework that wrote it) through
    ``import_arrays``, checked as in a conversion, and the bundle is written atomically at
    ``output_path``.
    ``ignore`` names unknown upstream settings to pass over. Returns the imported model.
    """
    name = UPSTREAM_BACKEND if backend is None else _backend_name(backend)
    upstream = read_upstream_archive(archive_path, backend=name, ignore=ignore)
    settings = upstream.settings
    if settings.probe is None:
        raise ConversionError(
            f"upstream archive {upstream.path}: its params.dill holds no 'probe'; a ptycho "
            "bundle needs the probe the network was trained with"
        )
    target = _backend(name if backend is None else backend)
    model = _imported(
        target,
        upstream.arrays,
        origin=f"upstream archive {upstream.path}",
        config=settings.config,
        probe=settings.probe,
        intensity_scale=settings.intensity_scale,
        history={},
    )
    target.save(model, output_path)
    return model

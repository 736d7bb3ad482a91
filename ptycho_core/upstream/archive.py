"""Reading an upstream PtychoPINN model archive (``wts.h5.zip``) as data.

Upstream writes one zip holding ``manifest.dill`` (``{'models': [...], 'version': ...}``)
and, per model (``autoencoder``, ``diffraction_to_obj``), a folder with its weights, its
``params.dill`` (the whole ``params.cfg`` plus ``intensity_scale``) and, from the
TensorFlow package, ``custom_objects.dill`` and ``model.h5``. Version ``'1.0'`` is the
TensorFlow package (weights in ``model.keras``), ``'2.0-pytorch'`` its PyTorch port
(``model.pth``), which is recognised and refused (its network differs from ours). Only the
manifest, one model's ``params.dill`` and that model's weights are read;
``custom_objects.dill`` holds code (upstream's layer classes) and is never opened. Nothing
is extracted to disk.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho_core.errors import UpstreamArchiveError
from ptycho_core.physics import normalize_probe
from ptycho_core.upstream.keras_weights import read_keras_weights
from ptycho_core.upstream.members import read_member
from ptycho_core.upstream.params import UpstreamSettings, settings_from_params
from ptycho_core.upstream.pickles import MAX_PICKLE_BYTES, load_pickle

__all__ = ["VERSIONS", "UpstreamModel", "read_upstream_archive"]

TENSORFLOW_VERSION, PYTORCH_VERSION = "1.0", "2.0-pytorch"
VERSIONS = (TENSORFLOW_VERSION, PYTORCH_VERSION)
"""Upstream manifest versions: its TensorFlow package (read) and its PyTorch port (refused)."""

_PYTORCH_PORT = (
    "written by upstream's PyTorch port (manifest version '2.0-pytorch'), which is not "
    "imported: its network is another one (inputs normalised to total intensity N² and "
    "scaled by a per-dataset factor, gridsize² path-2 channels instead of 4, per-dataset "
    "scaling parameters in the physics), so its weights do not compute the same object in "
    "ptycho's network; import an archive of the TensorFlow package, or train in ptycho"
)
_MODELS = ("diffraction_to_obj", "autoencoder")
_MAX_MEMBERS = 256
_MAX_WEIGHTS_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class UpstreamModel:
    """One upstream network, as ptycho's neutral weights and configs."""

    path: Path
    settings: UpstreamSettings
    arrays: dict[str, np.ndarray]


def _fail(path: Path, message: str) -> UpstreamArchiveError:
    return UpstreamArchiveError(f"upstream archive {path}: {message}")


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise _fail(path, "no such file" if not path.exists() else "not a regular file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise _fail(path, f"not a zip archive ({error})") from None
    if len(archive.infolist()) > _MAX_MEMBERS:
        archive.close()
        raise _fail(path, f"more than {_MAX_MEMBERS} members")
    return archive


def _manifest(path: Path, archive: zipfile.ZipFile) -> str:
    """The model to read, from ``manifest.dill`` (the PyTorch port's archives are refused)."""
    raw = read_member(archive, "manifest.dill", MAX_PICKLE_BYTES, f"upstream archive {path}")
    manifest = load_pickle(raw, f"{path}: manifest.dill")
    if not isinstance(manifest, dict):
        raise _fail(path, f"manifest.dill: expected a dict, found {type(manifest).__name__}")
    version, models = manifest.get("version"), manifest.get("models")
    if version == PYTORCH_VERSION:
        raise _fail(path, _PYTORCH_PORT)
    if version != TENSORFLOW_VERSION:
        raise _fail(
            path,
            f"manifest.dill: key 'version': expected one of {', '.join(map(repr, VERSIONS))}, "
            f"found {version!r}",
        )
    if not isinstance(models, list | tuple):
        raise _fail(path, f"manifest.dill: key 'models': expected a list, found {models!r}")
    for name in _MODELS:
        if name in models:
            return name
    raise _fail(
        path,
        f"manifest.dill: key 'models': expected {' or '.join(map(repr, _MODELS))}, found "
        f"{list(models)!r}",
    )


def _trainable_probe(settings: UpstreamSettings) -> dict[str, np.ndarray]:
    if not settings.config.probe_trainable or settings.probe is None:
        return {}
    probe = normalize_probe(settings.probe, settings.config.model.probe_scale)
    return {"probe.real": probe.real.copy(), "probe.imag": probe.imag.copy()}


def read_upstream_archive(
    path: str | os.PathLike[str], *, backend: str = "tensorflow", ignore: Collection[str] = ()
) -> UpstreamModel:
    """The network in the upstream archive at ``path``, as neutral arrays and our configs.

    ``backend`` is the backend the configs name (default: the archive's own framework's);
    ``ignore`` lists unknown upstream settings to pass over
    (:func:`ptycho_core.upstream.params.settings_from_params`). Raises
    :class:`UpstreamArchiveError` naming the file, member and key for anything unsafe,
    corrupt or not representable.
    """
    path = Path(path)
    where = f"upstream archive {path}"
    with _open(path) as archive:
        name = _manifest(path, archive)
        source = f"{path}: {name}/params.dill"
        params = load_pickle(
            read_member(archive, f"{name}/params.dill", MAX_PICKLE_BYTES, where), source
        )
        settings = settings_from_params(params, source, backend=backend, ignore=ignore)
        member = f"{name}/model.keras"
        weights = read_member(archive, member, _MAX_WEIGHTS_BYTES, where)
    arrays, log_scale = read_keras_weights(weights, f"{path}: {member}", settings.config.model)
    arrays = _scaled(arrays, settings, log_scale)
    arrays.update(_trainable_probe(settings))
    return UpstreamModel(path, settings, arrays)


def _scaled(
    arrays: dict[str, np.ndarray], settings: UpstreamSettings, log_scale: float | None
) -> dict[str, np.ndarray]:
    """Add ``log_gain``; fold upstream's input scaling into the first convolution.

    Upstream's network sees s·X_n / exp(log_scale), with s the archive's
    ``intensity_scale``, and predicts amplitudes times exp(log_scale). Ours sees X_n and
    predicts s₀·g times them, s₀ = s. So the first kernel is multiplied by
    s / exp(log_scale) (a convolution is linear in its input) and g = exp(log_scale) / s.
    Without a stored log scale (current upstream), upstream sets it to log(s) on loading:
    the factor and g are both 1.
    """
    s = settings.intensity_scale
    if log_scale is None:
        arrays["log_gain"] = np.array(0.0, dtype=np.float32)
        return arrays
    ratio = s / math.exp(log_scale)
    first = "encoder.blocks.0.conv0.kernel"
    arrays[first] = (arrays[first] * np.float32(ratio)).astype(np.float32)
    arrays["log_gain"] = np.array(log_scale - math.log(s), dtype=np.float32)
    return arrays

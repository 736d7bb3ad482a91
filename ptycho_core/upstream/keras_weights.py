"""The generator's weights in an upstream ``model.keras``, read as data.

A Keras 3 ``.keras`` file is a zip holding ``config.json`` (the layer graph) and
``model.weights.h5``. Nothing is deserialised through Keras: the JSON is parsed as JSON,
and the HDF5 file is read with h5py, one dataset at a time after its shape is checked.

Keras stores each layer's variables under ``layers/<key>/vars/<i>``, where ``<key>`` is
the layer's class name in snake case, numbered in the order of the model's layers (the
order of ``config.json``); recent versions also record the layer's name there, which must
agree. Upstream's convolutions carry Keras' automatic names, ``conv2d``, ``conv2d_1``, …,
numbered in the order upstream's code creates them; that order, for the architecture in
the archive's settings, assigns each one its neutral name (specs/bundle-format.md §9).
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ptycho_core.architecture import decoder_filters, encoder_filters, neutral_shapes
from ptycho_core.config import ModelConfig
from ptycho_core.errors import BackendUnavailableError, UpstreamArchiveError
from ptycho_core.upstream.members import read_member

__all__ = ["creation_order", "read_keras_weights"]

_CONFIG_MAX_BYTES = 16 * 1024**2
_WEIGHTS_SLACK_BYTES = 64 * 1024**2
_MAX_MEMBERS = 64
_CONV_NAME = re.compile(r"conv2d(?:_(\d+))?")
_SCALER_CLASSES = ("IntensityScaler", "IntensityScaler_inv")


def creation_order(model: ModelConfig) -> list[tuple[str, str]]:
    """(neutral layer, activation) of each convolution in the order upstream creates them.

    Per decoder, upstream makes the two head convolutions before the decoder's blocks and
    the path-2 (or full-field) ConvUp after them; a head convolution the architecture does
    not call (path 2's without ``probe_big``, path 1's without ``pad_object``) is never
    part of the model and so is not listed.
    """
    order = []
    for i in range(len(encoder_filters(model.N, model.n_filters_scale))):
        order += [(f"encoder.blocks.{i}.conv0", "relu"), (f"encoder.blocks.{i}.conv1", "relu")]
    for decoder in ("decoder_amp", "decoder_phase"):
        order.append((f"{decoder}.head", "linear"))
        if model.pad_object and model.probe_big:
            order.append((f"{decoder}.outer.head", "linear"))
        for i in range(len(decoder_filters(model.N, model.n_filters_scale))):
            order += [
                (f"{decoder}.blocks.{i}.conv0", "relu"),
                (f"{decoder}.blocks.{i}.conv1", "relu"),
            ]
        if model.pad_object and model.probe_big:
            order += [(f"{decoder}.outer.up.conv0", "relu"), (f"{decoder}.outer.up.conv1", "relu")]
        elif not model.pad_object:
            order += [(f"{decoder}.up.conv0", "relu"), (f"{decoder}.up.conv1", "relu")]
    return order


def _snake_case(name: str) -> str:
    """Keras' rule for a layer class's key in the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layers(source: str, raw: bytes) -> list[dict[str, Any]]:
    try:
        document = json.loads(raw.decode("utf-8"))
        layers = document["config"]["layers"]
        if not isinstance(layers, list):
            raise TypeError("'layers' is not a list")
        return [
            {
                "class_name": str(layer["class_name"]),
                "config": dict(layer["config"]),
            }
            for layer in layers
        ]
    except (UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as error:
        raise UpstreamArchiveError(
            f"{source}: config.json does not describe a functional model's layers ({error})"
        ) from None


def _keys(layers: list[dict[str, Any]]) -> list[str]:
    used: dict[str, int] = {}
    keys = []
    for layer in layers:
        base = _snake_case(layer["class_name"])
        if base in used:
            used[base] += 1
            keys.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            keys.append(base)
    return keys


def _hard(source: str, weights: Any, path: str) -> Any:
    """The object at ``path``, or None; every step must be a hard link, so that no soft or
    external link sends the reader to another place or another file."""
    h5py = _h5py()
    node = weights
    for part in path.split("/"):
        link = node.get(part, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise UpstreamArchiveError(
                f"{source}: model.weights.h5: {path!r} is a {type(link).__name__}; only the "
                "file's own data is read"
            )
        node = node[part]
    return node


def _variables(source: str, weights: Any, key: str, name: str) -> list[Any]:
    group = _hard(source, weights, f"layers/{key}/vars")
    if group is None:
        return []
    recorded = group.attrs.get("name")
    if recorded is not None and str(recorded) != name:
        raise UpstreamArchiveError(
            f"{source}: model.weights.h5 holds layer {str(recorded)!r} where config.json "
            f"places layer {name!r}; the two files do not belong together"
        )
    names = sorted(group.keys(), key=lambda k: (len(k), k))
    if names != [str(i) for i in range(len(names))]:
        raise UpstreamArchiveError(
            f"{source}: layer {name!r}: variables {names} are not numbered 0, 1, …"
        )
    return [_hard(source, group, k) for k in names]


def _dataset(source: str, dataset: Any, what: str, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(dataset, _h5py().Dataset):
        raise UpstreamArchiveError(f"{source}: {what}: expected a dataset, found a group")
    if tuple(dataset.shape) != shape:
        found = tuple(dataset.shape)
        raise UpstreamArchiveError(f"{source}: {what}: expected shape {shape}, found {found}")
    if dataset.external or dataset.is_virtual:
        raise UpstreamArchiveError(f"{source}: {what}: stored outside the file; not read")
    if dataset.dtype.kind != "f":
        raise UpstreamArchiveError(f"{source}: {what}: expected float data, found {dataset.dtype}")
    array = np.asarray(dataset[()], dtype=np.float32)
    if not np.isfinite(array).all():
        raise UpstreamArchiveError(f"{source}: {what}: holds NaN or infinite values")
    return array


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise BackendUnavailableError(
            "reading an upstream TensorFlow archive needs h5py: pip install 'ptycho[upstream]'"
        ) from None
    return h5py


def read_keras_weights(
    data: bytes, source: str, model: ModelConfig
) -> tuple[dict[str, np.ndarray], float | None]:
    """Neutral name → array of the generator in ``model.keras`` bytes, and upstream's log
    scale when the file holds one (older upstream saves it with the model; current upstream
    keeps it only as the archive's ``intensity_scale``).

    Every convolution of the file must take its place in :func:`creation_order` with the
    shape :func:`neutral_shapes` gives and the activation upstream uses there; a layer
    with weights that maps nowhere is an error naming it.
    """
    shapes = neutral_shapes(model)
    expected_bytes = 4 * sum(math.prod(shape) for shape in shapes.values())
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise UpstreamArchiveError(f"{source}: not a Keras 3 model file ({error})") from None
    with archive:
        if len(archive.infolist()) > _MAX_MEMBERS:
            raise UpstreamArchiveError(f"{source}: more than {_MAX_MEMBERS} members")
        layers = _layers(source, read_member(archive, "config.json", _CONFIG_MAX_BYTES, source))
        raw = read_member(
            archive, "model.weights.h5", 2 * expected_bytes + _WEIGHTS_SLACK_BYTES, source
        )
    h5py = _h5py()
    try:
        weights = h5py.File(io.BytesIO(raw), "r")
    except OSError as error:
        raise UpstreamArchiveError(f"{source}: model.weights.h5 is not HDF5 ({error})") from None
    with weights:
        if _hard(source, weights, "layers") is None:
            raise UpstreamArchiveError(
                f"{source}: model.weights.h5 has no 'layers' group (written by Keras 2, whose "
                "layout is not read; re-save the model with Keras 3)"
            )
        convolutions: dict[int, tuple[str, Mapping[str, Any], list[Any]]] = {}
        log_scale = None
        for key, layer in zip(_keys(layers), layers, strict=True):
            name = str(layer["config"].get("name", key))
            variables = _variables(source, weights, key, name)
            match = _CONV_NAME.fullmatch(name)
            if layer["class_name"] == "Conv2D" and match:
                convolutions[int(match.group(1) or 0)] = (name, layer["config"], variables)
            elif layer["class_name"] in _SCALER_CLASSES and len(variables) == 1:
                log_scale = float(_dataset(source, variables[0], f"layer {name!r}", ()))
                if not math.isfinite(log_scale):
                    raise UpstreamArchiveError(f"{source}: layer {name!r}: log scale {log_scale}")
            elif variables:
                raise UpstreamArchiveError(
                    f"{source}: layer {name!r} ({layer['class_name']}) holds weights that map "
                    "onto no layer of ptycho's network"
                )
        order = creation_order(model)
        if len(convolutions) != len(order):
            raise UpstreamArchiveError(
                f"{source}: expected {len(order)} convolutions for {_architecture(model)}, "
                f"found {len(convolutions)} ({', '.join(n for n, _, _ in convolutions.values())})"
            )
        arrays = _neutral_arrays(source, order, convolutions, shapes)
    return arrays, log_scale


def _neutral_arrays(
    source: str,
    order: list[tuple[str, str]],
    convolutions: Mapping[int, tuple[str, Mapping[str, Any], list[Any]]],
    shapes: Mapping[str, tuple[int, ...]],
) -> dict[str, np.ndarray]:
    """The convolutions, in creation order, under the neutral names of ``order``."""
    arrays = {}
    for (neutral, activation), index in zip(order, sorted(convolutions), strict=True):
        name, config, variables = convolutions[index]
        found = config.get("activation", "linear")
        if found != activation:
            raise UpstreamArchiveError(
                f"{source}: layer {name!r} takes the place of {neutral} and should use "
                f"activation {activation!r}, found {found!r}"
            )
        if len(variables) != 2:
            raise UpstreamArchiveError(
                f"{source}: layer {name!r}: expected a kernel and a bias, found "
                f"{len(variables)} variable(s)"
            )
        for variable, part in zip(variables, ("kernel", "bias"), strict=True):
            what = f"layer {name!r} ({neutral}.{part})"
            arrays[f"{neutral}.{part}"] = _dataset(
                source, variable, what, shapes[f"{neutral}.{part}"]
            )
    return arrays


def _architecture(model: ModelConfig) -> str:
    return (
        f"N={model.N}, gridsize={model.gridsize}, n_filters_scale={model.n_filters_scale}, "
        f"pad_object={model.pad_object}, probe_big={model.probe_big}"
    )

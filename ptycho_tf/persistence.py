"""Saving and loading Keras models in the core bundle format (specs/bundle-format.md).

The payload is one file, ``model.weights.h5``: the network's variables written by Keras
``save_weights`` and read back by ``load_weights`` (HDF5 through h5py: no code runs while
loading). Everything needed to rebuild the network — the TrainingConfig, N, gridsize,
s₀ and the probe — comes from the manifest that :mod:`ptycho_core.bundle` writes and
validates, so loading needs no argument but the path.

Keras' own loader is not strict enough on its own (a variable missing from the file can
be left at its initial value), so loading is checked around it:

1. the HDF5 file is inspected with h5py first: soft, external and virtual links or
   externally stored datasets are refused (they could read files outside the bundle);
2. its datasets are compared with those Keras writes for the architecture in the
   manifest — a missing, unexpected or differently shaped dataset raises
   :class:`~ptycho_core.errors.BundleError` naming the weight (its neutral name,
   ``encoder.blocks.0.conv0.kernel`` …) and the bundle;
3. after ``load_weights`` every variable is compared with its dataset, so a weight
   Keras skipped cannot go unnoticed.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.errors import BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_tf._keras import keras, keras_numpy_copy_warning_ignored, tf
from ptycho_tf.model import PtychoPINN
from ptycho_tf.training import BACKEND_NAME, build_network

__all__ = ["WEIGHTS_NAME", "load_model", "network_of", "save_model"]

WEIGHTS_NAME = "model.weights.h5"
"""The payload file holding the weights (Keras ``save_weights`` format)."""


def network_of(model: TrainedModel) -> PtychoPINN:
    """The Keras network of a ``tensorflow`` model (core's backend and payload checks)."""
    return model.payload(BACKEND_NAME, PtychoPINN)


def _check_finite(network: PtychoPINN) -> None:
    for name, variable in network.named_weights().items():
        if not np.all(np.isfinite(variable.numpy())):
            raise ValueError(
                f"TrainedModel: weight {name!r} holds NaN or inf (a diverged training?); "
                "refusing to save it"
            )


def save_model(model: TrainedModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a bundle at ``path`` (atomic: a failure leaves the old file intact).

    The manifest records the model as it is: :meth:`TensorFlowBackend.save
    <ptycho_core.network_backend.NetworkBackend.save>` reads the probe, output gain and
    parameter count off the network first.
    """
    network = network_of(model)

    def write_payload(folder: Path) -> None:
        _check_finite(network)
        with keras_numpy_copy_warning_ignored():
            network.save_weights(str(folder / WEIGHTS_NAME))

    write_bundle(
        path,
        model,
        write_payload,
        framework={"tensorflow": tf.__version__, "keras": keras.__version__},
    )


# ----------------------------------------------------------------------------- loading


def _datasets(bundle: Path, file: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """HDF5 path → (shape, dtype) of every dataset, refusing links and external storage."""
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        handle = h5py.File(file, "r")
    except OSError as error:
        raise BundleError(
            f"bundle {bundle}: payload file {WEIGHTS_NAME!r} is not a readable HDF5 file ({error})"
        ) from error
    with handle:
        problems: list[str] = []

        def visit(name: str, link: Any) -> None:
            if isinstance(link, h5py.SoftLink | h5py.ExternalLink):
                problems.append(
                    f"{name!r} is a link to {'another file' if isinstance(link, h5py.ExternalLink) else 'another path'}"
                )
                return
            item = handle.get(name)
            if isinstance(item, h5py.Dataset):
                if item.is_virtual or item.external:
                    problems.append(f"dataset {name!r} is stored outside the file")
                    return
                found[name] = (tuple(item.shape), item.dtype)

        try:
            handle.visititems_links(visit)
        except (OSError, KeyError, RuntimeError) as error:
            raise BundleError(
                f"bundle {bundle}: payload file {WEIGHTS_NAME!r} is corrupt ({error})"
            ) from error
        if problems:
            raise BundleError(
                f"bundle {bundle}: payload file {WEIGHTS_NAME!r} is refused: {problems[0]}; "
                "weights must be plain datasets inside the file"
            )
    return found


def _reference_layout(
    network: PtychoPINN, workdir: Path
) -> dict[str, tuple[str, tuple[int, ...], np.dtype]]:
    """HDF5 path → (neutral weight name, shape, dtype) of what Keras writes for ``network``.

    Each variable is first filled with its own index + 1 (exact in float32), so every
    dataset of the reference file names the variable it holds. The variables are
    overwritten by ``load_weights`` afterwards.
    """
    names = {id(variable): name for name, variable in network.named_weights().items()}
    order = list(network.weights)
    for index, variable in enumerate(order):
        variable.assign(np.full(variable.shape, index + 1, dtype=variable.dtype))
    reference = workdir / "reference.weights.h5"
    with keras_numpy_copy_warning_ignored():
        network.save_weights(str(reference))
    layout = {}
    with h5py.File(reference, "r") as handle:

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                marker = int(np.asarray(item[()]).flat[0])
                layout[name] = (names[id(order[marker - 1])], tuple(item.shape), item.dtype)

        handle.visititems(visit)
    return layout


def _check_layout(
    bundle: Path,
    expected: dict[str, tuple[str, tuple[int, ...], np.dtype]],
    found: dict[str, tuple[tuple[int, ...], np.dtype]],
) -> None:
    """Name the first missing, unexpected or mismatched weight, before anything is loaded."""
    missing = [path for path in expected if path not in found]
    if missing:
        name = expected[missing[0]][0]
        raise BundleError(
            f"bundle {bundle}: weight {name!r} (HDF5 dataset {missing[0]!r}) is missing from "
            f"{WEIGHTS_NAME!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = [path for path in found if path not in expected]
    if unexpected:
        raise BundleError(
            f"bundle {bundle}: HDF5 dataset {unexpected[0]!r} in {WEIGHTS_NAME!r} does not belong "
            "to the architecture in the manifest"
        )
    for path, (name, shape, dtype) in expected.items():
        found_shape, found_dtype = found[path]
        if found_shape != shape or found_dtype != dtype:
            raise BundleError(
                f"bundle {bundle}: weight {name!r} (HDF5 dataset {path!r}): expected shape "
                f"{shape} {dtype} (from the manifest's config), found {found_shape} {found_dtype}"
            )


def _verify_restored(
    bundle: Path, network: PtychoPINN, file: Path, layout: dict[str, tuple[str, Any, Any]]
) -> None:
    """Every variable must now equal its dataset in the file, bit for bit."""
    variables = network.named_weights()
    with h5py.File(file, "r") as handle:
        for path, (name, _, _) in layout.items():
            stored = np.asarray(handle[path][()])
            if not np.array_equal(np.asarray(variables[name].numpy()), stored):
                raise BundleError(
                    f"bundle {bundle}: weight {name!r} was not restored from {WEIGHTS_NAME!r} "
                    f"(HDF5 dataset {path!r})"
                )
            if not np.all(np.isfinite(stored)):
                raise BundleError(f"bundle {bundle}: weight {name!r} holds NaN or inf")


def _load_weights_strictly(bundle: Path, network: PtychoPINN, file: Path) -> None:
    found = _datasets(bundle, file)
    with tempfile.TemporaryDirectory(prefix="ptycho-tf-") as workdir:
        expected = _reference_layout(network, Path(workdir))
    _check_layout(bundle, expected, found)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with keras_numpy_copy_warning_ignored():
                network.load_weights(str(file))
    except Exception as error:  # Keras raises ValueError, KeyError, OSError, warnings...
        raise BundleError(
            f"bundle {bundle}: payload file {WEIGHTS_NAME!r} could not be loaded "
            f"({type(error).__name__}: {error})"
        ) from error
    _verify_restored(bundle, network, file, expected)


def load_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Rebuild the network described by the bundle's manifest and load its weights strictly.

    A bundle of another backend raises :class:`~ptycho_core.errors.BackendMismatchError`;
    anything else wrong with the file raises :class:`~ptycho_core.errors.BundleError`
    naming the bundle and, for weights, the weight.
    """
    with read_bundle(path, expected_backend=BACKEND_NAME) as contents:
        weights = contents.payload_dir / WEIGHTS_NAME
        if not weights.is_file():
            raise BundleError(
                f"bundle {contents.path}: payload file {WEIGHTS_NAME!r} is missing; a "
                f"{BACKEND_NAME} bundle holds its weights there"
            )
        network = contents.rebuild(build_network, seed=contents.config.seed)
        _load_weights_strictly(contents.path, network, weights)
    contents.check_network(network.probe_array(), network.output_gain)
    return contents.trained_model(network)

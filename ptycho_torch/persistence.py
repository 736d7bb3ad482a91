"""Saving and loading torch models in the core bundle format (specs/bundle-format.md).

The payload is one file, ``weights.pt``: the network's state dict written with
``torch.save`` and read back with ``torch.load(weights_only=True)`` (no code runs while
loading) and ``load_state_dict(strict=True)`` (no tensor is silently left random).
Everything needed to rebuild the network — the TrainingConfig, N, gridsize, s₀ and the
probe — comes from the manifest that :mod:`ptycho_core.bundle` writes and validates, so
loading needs no argument but the path.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.errors import BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_torch.model import PtychoPINN
from ptycho_torch.training import BACKEND_NAME, build_network, is_global_zero

__all__ = ["WEIGHTS_NAME", "load_model", "network_of", "save_model"]

WEIGHTS_NAME = "weights.pt"
"""The payload file holding the state dict."""

_ARCHIVE_OVERHEAD = 1024**2
"""Bytes a torch archive may hold beyond the tensors themselves (pickle, records, names)."""


def network_of(model: TrainedModel) -> PtychoPINN:
    """The torch network of a ``pytorch`` model (core's backend and payload checks)."""
    return model.payload(BACKEND_NAME, PtychoPINN)


def save_model(model: TrainedModel, path: str | os.PathLike[str]) -> None:
    """Write ``model`` as a bundle at ``path`` (atomic: a failure leaves the old file intact).

    The manifest records the model as it is: :meth:`TorchBackend.save
    <ptycho_core.network_backend.NetworkBackend.save>` reads the probe, output gain and
    parameter count off the network first. A no-op on DDP ranks other than 0, which own
    no outputs.
    """
    network = network_of(model)
    if not is_global_zero():
        return
    state = {
        name: tensor.detach().to("cpu", copy=True).contiguous()
        for name, tensor in network.state_dict().items()
    }

    def write_payload(folder: Path) -> None:
        torch.save(state, folder / WEIGHTS_NAME)

    write_bundle(path, model, write_payload, framework={"torch": torch.__version__})


def _check_declared_size(path: Path, weights: Path, expected: dict[str, torch.Tensor]) -> None:
    """Refuse a weights archive declaring more bytes than the architecture's tensors need.

    ``torch.load`` allocates each record at the size the archive declares, so the
    declarations are checked first, against the network the manifest describes.
    """
    if not weights.is_file():
        raise BundleError(
            f"bundle {path}: payload file {WEIGHTS_NAME!r} is missing; a {BACKEND_NAME} bundle "
            "holds its weights there"
        )
    needed = sum(t.numel() * t.element_size() for t in expected.values()) + _ARCHIVE_OVERHEAD
    try:
        with zipfile.ZipFile(weights) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise BundleError(
            f"bundle {path}: payload file {WEIGHTS_NAME!r} is not a torch weights archive ({error})"
        ) from error
    if declared > needed:
        raise BundleError(
            f"bundle {path}: payload file {WEIGHTS_NAME!r} declares {declared} bytes, more than "
            f"the {needed} the architecture in the manifest needs"
        )


def _read_state(path: Path, weights: Path) -> dict[str, torch.Tensor]:
    try:
        state: Any = torch.load(weights, weights_only=True, map_location="cpu")
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise BundleError(
            f"bundle {path}: payload file {WEIGHTS_NAME!r} is not a readable torch state dict "
            f"({type(error).__name__}: {error})"
        ) from error
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise BundleError(
            f"bundle {path}: payload file {WEIGHTS_NAME!r}: expected a mapping of tensor name "
            f"to tensor, found {type(state).__name__}"
        )
    return state


def _check_state(
    path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]
) -> None:
    """Name the first missing, unexpected or mismatched tensor, before anything is loaded."""
    missing = [name for name in expected if name not in found]
    if missing:
        raise BundleError(
            f"bundle {path}: weight tensor {missing[0]!r} is missing from {WEIGHTS_NAME!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = [name for name in found if name not in expected]
    if unexpected:
        raise BundleError(
            f"bundle {path}: weight tensor {unexpected[0]!r} in {WEIGHTS_NAME!r} does not belong "
            "to the architecture in the manifest"
        )
    for name, reference in expected.items():
        tensor = found[name]
        if tensor.shape != reference.shape or tensor.dtype != reference.dtype:
            raise BundleError(
                f"bundle {path}: weight tensor {name!r}: expected shape "
                f"{tuple(reference.shape)} {reference.dtype} (from the manifest's config), found "
                f"{tuple(tensor.shape)} {tensor.dtype}"
            )


def load_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Rebuild the network described by the bundle's manifest and load its weights strictly.

    A bundle of another backend raises :class:`~ptycho_core.errors.BackendMismatchError`;
    anything else wrong with the file raises :class:`~ptycho_core.errors.BundleError`
    naming the bundle and, for weights, the tensor.
    """
    with read_bundle(path, expected_backend=BACKEND_NAME) as contents:
        network = contents.rebuild(build_network)
        weights = contents.payload_dir / WEIGHTS_NAME
        _check_declared_size(contents.path, weights, network.state_dict())
        state = _read_state(contents.path, weights)
    _check_state(contents.path, network.state_dict(), state)
    network.load_state_dict(state, strict=True)
    network.eval()
    contents.check_network(network.probe_array(), network.output_gain, weight="weight tensor")
    return contents.trained_model(network)

"""Reconstruction files (``reconstruction.npz``) and their evaluation against ground truth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ptycho_core._atomic import atomic_path
from ptycho_core.data import PtychoData
from ptycho_core.errors import DataContractError
from ptycho_core.metrics import evaluate
from ptycho_core.stitching import Stitched

__all__ = ["evaluate_stitched", "load_reconstruction", "save_reconstruction"]

_KEYS = ("amplitude", "phase", "object", "weight", "origin")


def save_reconstruction(stitched: Stitched, path: str | os.PathLike[str], *, backend: str) -> Path:
    """Write ``amplitude``, ``phase``, ``object``, ``weight``, ``origin`` and ``backend``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            amplitude=stitched.amplitude.astype(np.float32),
            phase=stitched.phase.astype(np.float32),
            object=stitched.image.astype(np.complex64),
            weight=stitched.weight.astype(np.float32),
            origin=np.asarray(stitched.origin, dtype=np.int64),
            backend=np.array(backend),
        )
    return Path(path)


def load_reconstruction(path: str | os.PathLike[str]) -> Stitched:
    """Read a file written by :func:`save_reconstruction` (never unpickles)."""
    source = Path(path)
    try:
        with np.load(source, allow_pickle=False) as archive:
            missing = [key for key in _KEYS if key not in archive.files]
            if missing:
                raise DataContractError(
                    f"{source}: key '{missing[0]}': expected a reconstruction file with keys "
                    f"{', '.join(_KEYS)}, found {', '.join(sorted(archive.files)) or 'no keys'}"
                )
            image = archive["object"].astype(np.complex128)
            weight = archive["weight"].astype(np.float64)
            origin = tuple(int(v) for v in archive["origin"])
    except (OSError, ValueError) as error:
        if isinstance(error, DataContractError):
            raise
        raise DataContractError(f"{source}: cannot read a reconstruction NPZ: {error}") from error
    if image.ndim != 2 or weight.shape != image.shape or len(origin) != 2:
        raise DataContractError(
            f"{source}: key 'object': expected a 2-D image with a weight map of the same "
            f"shape and a 2-element origin, found {image.shape}, {weight.shape}, {origin}"
        )
    return Stitched(image=image, weight=weight, origin=origin)


def evaluate_stitched(stitched: Stitched, data: PtychoData) -> dict[str, float]:
    """Metrics of a stitched reconstruction against the dataset's ``objectGuess``.

    The canvas is placed in the object's frame through its origin; only pixels that
    the reconstruction covers and that lie inside the object are compared.
    """
    if data.object is None:
        raise DataContractError(
            f"{data.source}: key 'objectGuess': expected a ground-truth object to evaluate "
            "against, found none"
        )
    truth = data.object
    frame = np.zeros(truth.shape, dtype=np.complex128)
    covered = np.zeros(truth.shape, dtype=bool)
    row0, col0 = stitched.origin
    h, w = stitched.image.shape
    r_lo, c_lo = max(row0, 0), max(col0, 0)
    r_hi, c_hi = min(row0 + h, truth.shape[0]), min(col0 + w, truth.shape[1])
    if r_lo >= r_hi or c_lo >= c_hi:
        raise DataContractError(
            f"{data.source}: key 'objectGuess': the reconstruction (origin {stitched.origin}, "
            f"shape {stitched.image.shape}) does not overlap the object {truth.shape}"
        )
    src = (slice(r_lo - row0, r_hi - row0), slice(c_lo - col0, c_hi - col0))
    frame[r_lo:r_hi, c_lo:c_hi] = stitched.image[src]
    covered[r_lo:r_hi, c_lo:c_hi] = stitched.covered[src]
    return evaluate(frame, truth, mask=covered)

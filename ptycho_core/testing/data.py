"""The synthetic data every check runs on, and the inputs the kit forges.

One simulated scan (``ptycho_core.simulate``) of 24 positions at pattern size ``N``; the
configs of every run (2 epochs, batch 8, a quarter of the groups held out for validation,
inference batch 10, seed 3, on the CPU); fresh inference groups; fingerprints that tell
whether a backend modified what it was given; and the inputs of the refusal and
initial-object checks: a model of another backend, groups with some arrays replaced, and
the true object as an initial object.

The simulator and the training-data preparation are imported when first used, so that
importing the kit stays cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.grouping import GroupedData, make_groups
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.stitching import Stitched

if TYPE_CHECKING:
    from ptycho_core.data import PtychoData

__all__ = [
    "ACCELERATOR",
    "DEFAULT_GRIDSIZE",
    "DEFAULT_N",
    "EPOCHS",
    "FOREIGN_BACKEND",
    "INFER_BATCH",
    "N_POSITIONS",
    "SEED",
    "START_CROP",
    "START_FACTOR",
    "TRAIN_BATCH",
    "UNKNOWN_OPTION",
    "VALIDATION_SPLIT",
    "fingerprint",
    "foreign_model",
    "groups_fingerprint",
    "groups_with",
    "inference_config",
    "inference_groups",
    "simulated_dataset",
    "training_config",
    "training_data",
    "true_start",
]

DEFAULT_N = 64
"""Pattern size of the test data unless the caller chooses another."""
DEFAULT_GRIDSIZE = 1
"""Patterns per group side unless the caller chooses another."""
ACCELERATOR = "cpu"
"""Every run of the kit is on the CPU."""
N_POSITIONS = 24
EPOCHS = 2
TRAIN_BATCH = 8
INFER_BATCH = 10
VALIDATION_SPLIT = 0.25
SEED = 3
FOREIGN_BACKEND = "conformance-foreign"
"""Backend name of the bundles and models the kit forges to test refusals."""
UNKNOWN_OPTION = "no_such_option_for_conformance"
"""A backend option no backend declares: every backend must refuse it (§11)."""
# The initial object of the initial-object checks: the true object cropped (so its origin
# matters), rescaled and phase-shifted (scale and global phase are arbitrary, §9.2).
START_CROP = (5, 3)
"""Rows and columns cut from the top left of the true object to make the initial object."""
START_FACTOR = 2.5 * np.exp(0.8j)
"""Complex scale applied to the true object to make the initial object."""


# ----------------------------------------------------------------------------- data and configs


def simulated_dataset(N: int) -> PtychoData:
    """The simulated scan every check uses: 24 positions at pattern size ``N``, seed 3."""
    from ptycho_core.simulate import default_simulation_config, simulate

    return simulate(default_simulation_config("train", N=N, n_positions=N_POSITIONS, seed=SEED))


def training_config(backend: str, N: int, gridsize: int, /, **changes: Any) -> TrainingConfig:
    """The training config of the kit's runs for ``backend``, with ``changes`` applied
    (any field, ``backend`` and ``model`` included)."""
    values: dict[str, Any] = {
        "model": ModelConfig(N=N, gridsize=gridsize),
        "backend": backend,
        "nepochs": EPOCHS,
        "batch_size": TRAIN_BATCH,
        "n_groups": None,
        "validation_split": VALIDATION_SPLIT,
        "seed": SEED,
        "accelerator": ACCELERATOR,
    }
    values.update(changes)
    return TrainingConfig(**values)


def inference_config(backend: str, /, **changes: Any) -> InferenceConfig:
    """The inference config of the kit's runs for ``backend``, with ``changes`` applied."""
    values: dict[str, Any] = {
        "backend": backend,
        "batch_size": INFER_BATCH,
        "seed": SEED,
        "accelerator": ACCELERATOR,
    }
    values.update(changes)
    return InferenceConfig(**values)


def training_data(dataset: PtychoData, config: TrainingConfig) -> TrainingData:
    """Training data prepared from ``dataset`` as ``ptycho train`` prepares it (new arrays)."""
    from ptycho_core.workflows import prepare_training_data

    return prepare_training_data(dataset, config)


def inference_groups(dataset: PtychoData, gridsize: int) -> GroupedData:
    """Inference groups of ``dataset`` (new arrays on every call), one per position."""
    neighbours = max(4, gridsize**2)
    return make_groups(dataset, gridsize, n_groups=None, neighbor_count=neighbours, seed=SEED)


# ----------------------------------------------------------------------------- fingerprints


def fingerprint(*arrays: Any) -> str:
    """SHA-256 over the bytes, dtypes and shapes of arrays (None allowed)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        arr = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def groups_fingerprint(groups: GroupedData) -> str:
    """:func:`fingerprint` of every array of ``groups`` and its normalisation."""
    return fingerprint(
        groups.diffraction,
        groups.coords_relative,
        groups.coords_offsets,
        groups.nn_indices,
        groups.object_patches,
        np.float64(groups.normalisation),
    )


# ----------------------------------------------------------------------------- forged inputs


def groups_with(groups: GroupedData, **changes: Any) -> GroupedData:
    """A copy of ``groups`` with some fields replaced (e.g. diffraction of another size)."""
    return dataclasses.replace(groups, **changes)


def foreign_model(model: TrainedModel) -> TrainedModel:
    """``model`` relabelled as a model of :data:`FOREIGN_BACKEND` (its config too)."""
    return dataclasses.replace(
        model, backend=FOREIGN_BACKEND, config=model.config.replace(backend=FOREIGN_BACKEND)
    )


def true_start(dataset: PtychoData) -> Stitched:
    """The true object as an initial object: cropped, with its origin, rescaled, turned."""
    row, col = START_CROP
    image = START_FACTOR * np.asarray(dataset.object, dtype=np.complex128)[row:, col:]
    return Stitched(image=image, weight=np.ones(image.shape), origin=(row, col))

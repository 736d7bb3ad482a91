"""``PtychoReconstructor``: ptycho as a Ptychodus ``TrainableReconstructor``.

One reconstructor per model type (``PINN``: physics loss, ``Supervised``: ground-truth
object); the backend is the ``[Ptycho] Backend`` setting, resolved through
:mod:`ptycho_core.backend_selector` in the worker. What the reconstructor does (and
what it refuses) is specified in specs/ptychodus.md §2.

The parent side imports Ptychodus's API, numpy and ``ptycho_core`` only: reading a
bundle's manifest, copying bundles and converting data never import a framework. The
framework runs in :mod:`~ptycho_ptychodus.worker`, in a child process unless the
RunInSubprocess setting is off.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ptychodus.api.object import Object
from ptychodus.api.product import LossValue, Product
from ptychodus.api.reconstruct import (
    ReconstructInput,
    ReconstructOutput,
    TrainableReconstructor,
    TrainOutput,
)

from ptycho_core._atomic import atomic_path
from ptycho_core.backend_selector import select_backend
from ptycho_core.bundle import BUNDLE_EXTENSION, read_manifest
from ptycho_core.data import load_npz, save_npz
from ptycho_core.errors import BackendMismatchError
from ptycho_ptychodus import SETTINGS_GROUP
from ptycho_ptychodus.mapping import (
    MappedInput,
    map_reconstruct_input,
    mean_photons_per_pattern,
)
from ptycho_ptychodus.runner import run_job
from ptycho_ptychodus.settings import PtychoSettings, backend_problem
from ptycho_ptychodus.worker import ModelCache, ReconstructJob, TrainJob

__all__ = ["MODEL_TYPES", "PROGRESS_GOAL", "TRAINING_DATA_NAME", "PtychoReconstructor"]

MODEL_TYPES: Mapping[str, str] = {"PINN": "pinn", "Supervised": "supervised"}
"""Reconstructor name → ``ModelConfig.model_type``."""
PROGRESS_GOAL = 100
"""Progress is reported in percent."""
TRAINING_DATA_NAME = "train_data.npz"
"""File a training folder must hold (the name upstream PtychoPINN uses too)."""
MODEL_FILE_NAME = f"model{BUNDLE_EXTENSION}"
"""Name of the bundle written into an output folder (Ptychodus's batch layout)."""


def _history_losses(history: Mapping[str, Sequence[Any]], key: str) -> list[LossValue]:
    values = history.get(key, []) or []
    return [
        LossValue(epoch=i, value=float(v))
        for i, v in enumerate(values)
        if v is not None and math.isfinite(v)
    ]


def _training_file(input_path: Path) -> Path:
    if input_path.is_file():
        return input_path
    candidate = input_path / TRAINING_DATA_NAME
    if candidate.is_file():
        return candidate
    found = (
        ", ".join(sorted(p.name for p in input_path.iterdir())) or "nothing"
        if input_path.is_dir()
        else "no such file or folder"
    )
    raise FileNotFoundError(
        f"training data: expected an NPZ file, or a folder holding {TRAINING_DATA_NAME} "
        f"(write it with 'Export Training Data...'), found {input_path} ({found})"
    )


def _model_target(output_path: Path) -> Path:
    if output_path.suffix == BUNDLE_EXTENSION:
        return output_path
    return output_path / MODEL_FILE_NAME


class PtychoReconstructor(TrainableReconstructor):
    """ptycho's model as a Ptychodus trainable reconstructor (one model type)."""

    def __init__(self, name: str, settings: PtychoSettings, log: logging.Logger) -> None:
        if name not in MODEL_TYPES:
            raise ValueError(
                f"reconstructor name: expected one of {list(MODEL_TYPES)}, found {name!r}"
            )
        super().__init__()
        self._name = name
        self._model_type = MODEL_TYPES[name]
        self._settings = settings
        self._log = log
        self._lock = threading.Lock()
        self._workdir: Path | None = None
        self._copies = itertools.count()
        self._bundle: Path | None = None
        self._manifest: dict[str, Any] | None = None
        self._cache = ModelCache()

    # -- identity -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def model_type(self) -> str:
        return self._model_type

    @property
    def settings(self) -> PtychoSettings:
        """The library's ``[Ptycho]`` settings this reconstructor reads."""
        return self._settings

    @property
    def model_path(self) -> Path | None:
        """The loaded bundle (the reconstructor's private copy), or None."""
        return self._bundle

    def get_progress_goal(self) -> int:
        return PROGRESS_GOAL

    # -- the loaded model ---------------------------------------------------------------

    def _private_copy(self, source: Path) -> Path:
        """Copy a bundle into this reconstructor's own folder (what 'loaded' means)."""
        with self._lock:
            if self._workdir is None:
                workdir = Path(tempfile.mkdtemp(prefix="ptycho-ptychodus-"))
                weakref.finalize(self, shutil.rmtree, workdir, True)
                self._workdir = workdir
            target = self._workdir / f"model-{next(self._copies)}{BUNDLE_EXTENSION}"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        return target

    def _adopt(self, source: Path) -> dict[str, Any]:
        manifest = read_manifest(source)
        backend = self._settings.backend
        if manifest["backend"] != backend:
            raise BackendMismatchError(
                f"{source}: this model bundle was written by backend '{manifest['backend']}', "
                f"but the [{SETTINGS_GROUP}] Backend setting is '{backend}'. Set "
                f"Backend = {manifest['backend']} in the [{SETTINGS_GROUP}] section of the "
                f"settings file to use it, or load a bundle trained with '{backend}'"
            )
        copy = self._private_copy(source)
        with self._lock:
            self._bundle, self._manifest = copy, manifest
            self._cache.clear()
        trained_as = manifest["config"]["model"]["model_type"]
        self._log.info(
            "loaded %s: backend %s, N %d, gridsize %d, %d epochs, trained as '%s'",
            source,
            manifest["backend"],
            manifest["N"],
            manifest["gridsize"],
            len(manifest["history"].get("loss", [])),
            trained_as,
        )
        if trained_as != self._model_type:
            self._log.info(
                "the model was trained as '%s'; ptycho_%s reconstructs with it all the same",
                trained_as,
                self._name.casefold(),
            )
        self._settings.check_backend()
        return manifest

    def is_model_loaded(self) -> bool:
        return self._bundle is not None

    def get_model_file_filter(self) -> str:
        return f"ptycho model bundle (*{BUNDLE_EXTENSION})"

    def get_model_file_extension(self) -> str:
        return BUNDLE_EXTENSION

    def load_model_from_file(self, file_path: Path) -> None:
        """Load a ``.ptycho`` bundle written by the Backend setting's backend."""
        try:
            self._adopt(Path(file_path))
        except Exception as error:
            self._log.error("load model: %s", error)
            raise

    def save_model(self, file_path: Path) -> None:
        """Write the loaded (or last trained) bundle to ``file_path``, atomically."""
        if self._bundle is None:
            message = "save model: no model to save; train one or load a .ptycho bundle first"
            self._log.error("%s", message)
            raise RuntimeError(message)
        with atomic_path(file_path) as tmp:
            shutil.copyfile(self._bundle, tmp)
        self._log.info("saved the model to %s", file_path)

    def _require_backend(self) -> str:
        """The Backend setting; an unusable one raises the selector's own error here.

        Checked with :func:`backend_problem` (no import); only when it reports a problem
        is :func:`select_backend` called in this process, which then fails before
        importing anything for a missing framework, an unknown name or a conflict.
        """
        backend = self._settings.backend
        if backend_problem(backend) is not None:
            select_backend(backend)
        return backend

    def _require_model(self) -> tuple[Path, dict[str, Any]]:
        with self._lock:
            bundle, manifest = self._bundle, self._manifest
        if bundle is None or manifest is None:
            raise RuntimeError(
                f"ptycho_{self._name.casefold()}: no model is loaded; train one or load a "
                f".ptycho bundle ('Load Model...', or model{BUNDLE_EXTENSION} in the batch "
                "input folder)"
            )
        backend = self._settings.backend
        if manifest["backend"] != backend:
            raise BackendMismatchError(
                f"the loaded model was written by backend '{manifest['backend']}', but the "
                f"[{SETTINGS_GROUP}] Backend setting is '{backend}'; set Backend = "
                f"{manifest['backend']} or load a bundle trained with '{backend}'"
            )
        return bundle, manifest

    # -- reconstruct --------------------------------------------------------------------

    def _output(
        self,
        parameters: ReconstructInput,
        mapped: MappedInput,
        image: np.ndarray,
        covered: np.ndarray,
        losses: list[LossValue],
    ) -> Product:
        product = parameters.product
        array = np.where(covered, image, mapped.object_layer).astype(np.complex64)
        obj = Object(
            array=array,
            pixel_geometry=product.object_.get_pixel_geometry(),
            center=product.object_.get_center(),
            layer_spacing_m=[],
        )
        return Product(
            metadata=product.metadata,
            probe_positions=product.probe_positions,
            probes=product.probes,
            object_=obj,
            losses=losses,
        )

    def reconstruct(self, parameters: ReconstructInput) -> Iterator[ReconstructOutput]:
        """Predict the object with the loaded model; stream partial objects, then the whole.

        The object is returned in the input object's pixel geometry and centre; pixels no
        patch covers keep the input object's values. The product's losses are the
        model's training losses per epoch. With RefineEpochs > 0 the model is first refined
        on these data (``refine_model``; the loaded model itself is not changed).
        """
        try:
            self._require_backend()
            bundle, manifest = self._require_model()
            mapped = map_reconstruct_input(parameters)
            mapped.log_summary(self._log)
            refine_photons = None
            if self._settings.refine_epochs:
                refine_photons = (
                    mean_photons_per_pattern(mapped.data.diffraction)
                    if self._settings["PhotonsFromData"]
                    else float(self._settings["NumPhotons"])
                )
            job = ReconstructJob(
                backend=self._settings.backend,
                bundle=str(bundle),
                data=mapped.data,
                object_shape=mapped.object_shape,
                config=self._settings.inference_config(model_path=str(bundle)),
                updates=self._settings.updates,
                refine_epochs=self._settings.refine_epochs,
                refine_photons=refine_photons,
            )
            losses = _history_losses(manifest["history"], "loss")
            events = run_job(
                job, in_process=not self._settings.run_in_subprocess, cache=self._cache
            )
            with contextlib.closing(events):  # stopping early stops the worker
                for event in events:
                    if event[0] == "partial":
                        _, done, total, image, covered = event
                        yield ReconstructOutput(
                            product=self._output(parameters, mapped, image, covered, losses),
                            progress=PROGRESS_GOAL * done // total,
                        )
                    elif event[0] == "epoch":  # of a refinement (RefineEpochs)
                        _, epoch, nepochs, values = event
                        self._log.info(
                            "refinement epoch %d/%d: %s",
                            epoch + 1,
                            nepochs,
                            ", ".join(f"{k} {v:.5g}" for k, v in values.items()),
                        )
                    elif event[0] == "done":
                        self._log.info(
                            "reconstructed %d groups with backend %s",
                            event[1]["n_groups"],
                            event[1]["backend"],
                        )
        except Exception as error:
            self._log.error("reconstruct: %s", error)
            raise

    # -- training -----------------------------------------------------------------------

    def get_training_data_file_filter(self) -> str:
        return "NumPy Zipped Archive (*.npz)"

    def export_training_data(self, file_path: Path, parameters: ReconstructInput) -> None:
        """Write the input as a data-contract NPZ: √counts amplitudes, object pixels, probe
        mode 0 and (when it contains the scan) the object as ``objectGuess``."""
        try:
            mapped = map_reconstruct_input(parameters, include_object=True)
            mapped.log_summary(self._log)
            save_npz(mapped.data, file_path)
            self._log.info(
                "exported %d patterns to %s (mean %.4g photons per pattern)",
                mapped.data.n_positions,
                file_path,
                mean_photons_per_pattern(mapped.data.diffraction),
            )
        except Exception as error:
            self._log.error("export training data: %s", error)
            raise

    def train(self, input_path: Path, output_path: Path) -> Iterator[TrainOutput]:
        """Train on ``input_path`` (an NPZ, or a folder with train_data.npz); write the
        bundle to ``output_path`` (a .ptycho file, or model.ptycho in that folder) and
        make it the loaded model."""
        try:
            self._require_backend()
            data_file = _training_file(Path(input_path))
            target = _model_target(Path(output_path))
            data = load_npz(data_file)
            photons = mean_photons_per_pattern(data.diffraction)
            config = self._settings.training_config(
                N=data.N,
                model_type=self._model_type,
                n_positions=data.n_positions,
                data_photons=photons,
                train_data_file=str(data_file),
                output_dir=str(target.parent),
            )
            self._log.info(
                "training backend %s (%s) on %s: %d patterns of %d×%d, nphotons %.4g%s",
                config.backend,
                self._model_type,
                data_file,
                data.n_positions,
                data.N,
                data.N,
                config.nphotons,
                " (from the data)" if self._settings["PhotonsFromData"] else "",
            )
            job = TrainJob(config=config, data_path=str(data_file), output_path=str(target))
            training: list[LossValue] = []
            validation: list[LossValue] = []
            events = run_job(job, in_process=not self._settings.run_in_subprocess)
            with contextlib.closing(events):
                for event in events:
                    if event[0] != "epoch":
                        continue
                    _, epoch, nepochs, values = event
                    if "loss" in values and math.isfinite(values["loss"]):
                        training.append(LossValue(epoch=epoch, value=values["loss"]))
                    if "val_loss" in values and math.isfinite(values["val_loss"]):
                        validation.append(LossValue(epoch=epoch, value=values["val_loss"]))
                    self._log.info(
                        "epoch %d/%d: %s",
                        epoch + 1,
                        nepochs,
                        ", ".join(f"{k} {v:.5g}" for k, v in values.items()),
                    )
                    yield TrainOutput(
                        training_loss=list(training),
                        validation_loss=list(validation),
                        progress=min(PROGRESS_GOAL - 1, PROGRESS_GOAL * (epoch + 1) // nepochs),
                    )
            self._adopt(target)
            self._log.info("wrote the trained model to %s", target)
            yield TrainOutput(
                training_loss=list(training),
                validation_loss=list(validation),
                progress=PROGRESS_GOAL,
            )
        except Exception as error:
            self._log.error("train: %s", error)
            raise

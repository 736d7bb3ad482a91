"""The ``[Ptycho]`` settings group: the backend, and ptycho's configs as Ptychodus parameters.

Every model and training parameter is a field of :class:`~ptycho_core.config.ModelConfig`
or :class:`~ptycho_core.config.TrainingConfig` (or the inference config) under a
Ptychodus-style name; its default is read from the config class, so the defaults are
ptycho's by construction. Values are validated by building the config: an invalid value
raises ``ValueError`` naming the setting (``[Ptycho] BatchSize: expected ...``).
specs/ptychodus.md §4 lists them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ptychodus.api.observer import Observable, Observer

from ptycho_core.backend_selector import available_backends, backend_info
from ptycho_core.config import (
    DEFAULT_BACKEND,
    InferenceConfig,
    ModelConfig,
    TrainingConfig,
)
from ptycho_core.errors import PtychoError, UnknownBackendError
from ptycho_ptychodus import SETTINGS_GROUP

__all__ = [
    "ADAPTER_SETTINGS",
    "INFERENCE_SETTINGS",
    "MODEL_SETTINGS",
    "NOT_SETTINGS",
    "TRAINING_SETTINGS",
    "PtychoSettings",
    "backend_problem",
]

MODEL_SETTINGS: Mapping[str, str] = {
    "GridSize": "gridsize",
    "NumFiltersScale": "n_filters_scale",
    "AmpActivation": "amp_activation",
    "ObjectBig": "object_big",
    "ProbeBig": "probe_big",
    "ProbeMask": "probe_mask",
    "PadObject": "pad_object",
    "ProbeScale": "probe_scale",
    "GaussianSmoothingSigma": "gaussian_smoothing_sigma",
    "Offset": "offset",
    "MaxPositionJitter": "max_position_jitter",
}
"""Setting name → :class:`ModelConfig` field."""

TRAINING_SETTINGS: Mapping[str, str] = {
    "NumEpochs": "nepochs",
    "BatchSize": "batch_size",
    "LearningRate": "learning_rate",
    "NumPhotons": "nphotons",
    "NumGroups": "n_groups",
    "NeighborCount": "neighbor_count",
    "SequentialSampling": "sequential_sampling",
    "MAEWeight": "mae_weight",
    "NLLWeight": "nll_weight",
    "ProbeTrainable": "probe_trainable",
    "IntensityScaleTrainable": "intensity_scale_trainable",
    "ValidationSplit": "validation_split",
    "LearningRateSchedule": "lr_schedule",
    "LearningRateWarmupSteps": "lr_warmup_steps",
    "LearningRatePlateauFactor": "lr_plateau_factor",
    "LearningRatePlateauPatience": "lr_plateau_patience",
    "MinLearningRate": "min_learning_rate",
    "EarlyStopPatience": "early_stop_patience",
    "Seed": "seed",
    "Precision": "precision",
    "Accelerator": "accelerator",
}
"""Setting name → :class:`TrainingConfig` field (NeighborCount, Seed, Precision and
Accelerator also set the inference config's fields of the same name)."""

INFERENCE_SETTINGS: Mapping[str, str] = {
    "InferenceBatchSize": "batch_size",
    "StitchSize": "stitch_size",
}
"""Setting name → :class:`InferenceConfig` field."""

NOT_SETTINGS: Mapping[str, Mapping[str, str]] = {
    "ModelConfig": {
        "N": "the size of the diffraction patterns",
        "model_type": "the reconstructor: ptycho_pinn ('pinn') or ptycho_supervised ('supervised')",
    },
    "TrainingConfig": {
        "model": "the [Ptycho] model settings",
        "backend": "the Backend setting",
        "devices": "one device inside Ptychodus (multi-device training: the ptycho CLI)",
        "strategy": "one device inside Ptychodus (multi-device training: the ptycho CLI)",
        "num_nodes": "one device inside Ptychodus (multi-device training: the ptycho CLI)",
        "train_data_file": "provenance, set to the training file",
        "test_data_file": "provenance, unused",
        "output_dir": "provenance, set to the output folder",
        "backend_options": "none: the backend's defaults (options: the ptycho CLI's --option)",
    },
    "InferenceConfig": {
        "backend": "the Backend setting",
        "n_groups": "every scan position is reconstructed",
        "neighbor_count": "the NeighborCount setting",
        "seed": "the Seed setting",
        "precision": "the Precision setting",
        "accelerator": "the Accelerator setting",
        "devices": "one device",
        "iterations": "the model's own count (iterative backends; the ptycho CLI's --iterations)",
        "backend_options": "none: the backend's defaults (options: the ptycho CLI's --option)",
        "model_path": "provenance, set to the loaded model",
        "test_data_file": "provenance, unused",
        "output_dir": "provenance, unused",
    },
}
"""Config fields that are deliberately not settings, and where their value comes from."""


@dataclass(frozen=True)
class _AdapterSetting:
    default: Any
    doc: str


ADAPTER_SETTINGS: Mapping[str, _AdapterSetting] = {
    "Backend": _AdapterSetting(
        DEFAULT_BACKEND, "backend name (a 'ptycho.backends' entry point: `ptycho backends`)"
    ),
    "PhotonsFromData": _AdapterSetting(
        True,
        "nphotons = mean total counts per pattern of the training data (else NumPhotons)",
    ),
    "RunInSubprocess": _AdapterSetting(
        True, "run the framework in a child process (else in Ptychodus's own process)"
    ),
    "Updates": _AdapterSetting(
        10, "partial results a reconstruction reports (1: only the final object)"
    ),
    "RefineEpochs": _AdapterSetting(
        0,
        "epochs of self-supervised refinement on the data before each reconstruction "
        "(0: none; the backend must support a warm start)",
    ),
}
"""Settings of the adapter itself (no config field)."""

_CONFIG_FIELD = re.compile(r"\b(ModelConfig|TrainingConfig|InferenceConfig)\.(\w+)")


def _setting_for(config: str, field: str) -> str | None:
    table = {
        "ModelConfig": MODEL_SETTINGS,
        "TrainingConfig": TRAINING_SETTINGS,
        "InferenceConfig": INFERENCE_SETTINGS,
    }[config]
    names = [name for name, f in table.items() if f == field]
    if not names and config == "InferenceConfig":
        names = [name for name, f in TRAINING_SETTINGS.items() if f == field]
    return names[0] if names else None


def _defaults() -> dict[str, Any]:
    model, training, inference = ModelConfig(), TrainingConfig(), InferenceConfig()
    values: dict[str, Any] = {name: s.default for name, s in ADAPTER_SETTINGS.items()}
    values.update({name: getattr(model, field) for name, field in MODEL_SETTINGS.items()})
    values.update({name: getattr(training, field) for name, field in TRAINING_SETTINGS.items()})
    values.update({name: getattr(inference, field) for name, field in INFERENCE_SETTINGS.items()})
    values["NumGroups"] = values["NumGroups"] or 0  # None (one group per position) ↔ 0
    return values


def backend_problem(name: str) -> str | None:
    """Why backend ``name`` cannot be used (the selector's own words), or None.

    Checked against :func:`~ptycho_core.backend_selector.available_backends`, which
    imports no framework.
    """
    infos = available_backends()
    usable = sorted({info.name for info in infos if info.usable})
    matches = [info for info in infos if info.name == name]
    if matches and all(info.usable for info in matches):
        return None
    if not matches:
        try:
            backend_info(name)
            reason = f"unknown backend {name!r}"
        except (UnknownBackendError, PtychoError) as error:
            reason = str(error)
    else:
        reason = next(info.reason for info in matches if not info.usable) or "not usable"
    return (
        f"[{SETTINGS_GROUP}] Backend = {name}: {reason} (usable backends: "
        f"{', '.join(usable) or 'none'}; change Backend in the [{SETTINGS_GROUP}] section of "
        "the settings file)"
    )


class PtychoSettings(Observer):
    """The ``[Ptycho]`` parameter group and the ptycho configs built from it."""

    def __init__(self, registry: Any, log: logging.Logger) -> None:
        super().__init__()
        self._log = log
        group = registry.create_group(SETTINGS_GROUP)
        self._parameters: dict[str, Any] = {}
        for name, value in _defaults().items():
            if isinstance(value, bool):
                parameter = group.create_boolean_parameter(name, value)
            elif isinstance(value, int):
                parameter = group.create_integer_parameter(name, value)
            elif isinstance(value, float):
                parameter = group.create_real_parameter(name, value)
            else:
                parameter = group.create_string_parameter(name, str(value))
            self._parameters[name] = parameter
        self._backend = self._parameters["Backend"]
        self._backend.add_observer(self)
        self.check_backend(level=logging.INFO)

    # -- values -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self._parameters[name].get_value()

    def set(self, name: str, value: Any) -> None:
        """Set one parameter (as the settings file or the GUI would)."""
        self._parameters[name].set_value(value)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._parameters)

    @property
    def backend(self) -> str:
        return str(self["Backend"]).strip()

    @property
    def run_in_subprocess(self) -> bool:
        return bool(self["RunInSubprocess"])

    @property
    def updates(self) -> int:
        return max(1, int(self["Updates"]))

    @property
    def refine_epochs(self) -> int:
        """Epochs to refine the model on the data before reconstructing (0: none)."""
        return max(0, int(self["RefineEpochs"]))

    def check_backend(self, *, level: int = logging.WARNING) -> str | None:
        """Log (at ``level``) and return why the Backend setting is unusable, or None."""
        problem = backend_problem(self.backend)
        if problem is not None:
            self._log.log(level, "%s", problem)
        return problem

    def _update(self, observable: Observable) -> None:
        if observable is self._backend:
            self.check_backend()

    # -- configs ----------------------------------------------------------------------

    def _build(self, make: Any) -> Any:
        try:
            return make()
        except ValueError as error:
            text = str(error)
            match = _CONFIG_FIELD.search(text)
            setting = _setting_for(match.group(1), match.group(2)) if match else None
            if setting is None:
                raise
            raise ValueError(
                f"[{SETTINGS_GROUP}] {setting}: {text[match.end() :].lstrip(': ')} "
                f"({match.group(0)})"
            ) from error

    def model_config(self, *, N: int, model_type: str) -> ModelConfig:
        """The architecture: N from the data, the model type from the reconstructor."""
        values = {field: self[name] for name, field in MODEL_SETTINGS.items()}
        return self._build(lambda: ModelConfig(N=N, model_type=model_type, **values))

    def training_config(
        self,
        *,
        N: int,
        model_type: str,
        n_positions: int,
        data_photons: float,
        train_data_file: str,
        output_dir: str,
    ) -> TrainingConfig:
        """The training config for a dataset of ``n_positions`` patterns of N × N.

        ``data_photons`` (mean total counts per pattern) is nphotons when PhotonsFromData
        is on. NumGroups 0, or more groups than positions, means one group per position.
        """
        values = {field: self[name] for name, field in TRAINING_SETTINGS.items()}
        if not values["n_groups"] or values["n_groups"] >= n_positions:
            values["n_groups"] = None
        if self["PhotonsFromData"]:
            values["nphotons"] = float(data_photons)
        model = self.model_config(N=N, model_type=model_type)
        return self._build(
            lambda: TrainingConfig(
                model=model,
                backend=self.backend,
                train_data_file=train_data_file,
                output_dir=output_dir,
                **values,
            )
        )

    def inference_config(self, *, model_path: str) -> InferenceConfig:
        """The inference config: every scan position, the shared settings."""
        return self._build(
            lambda: InferenceConfig(
                backend=self.backend,
                batch_size=self["InferenceBatchSize"],
                stitch_size=self["StitchSize"],
                neighbor_count=self["NeighborCount"],
                seed=self["Seed"],
                precision=self["Precision"],
                accelerator=self["Accelerator"],
                model_path=model_path,
            )
        )

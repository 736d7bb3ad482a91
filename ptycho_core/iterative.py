"""What every iterative backend needs from core: its patterns, its refusals, its start.

An iterative solver (ePIE, pty-chi's engines, ...) works on single patterns at their own
positions rather than on groups, has no network and no gradient optimiser, and can start
from a given object. These helpers do those three things once, in ptycho's conventions
(specs/backend-protocol.md §3.3, §9.2), so each such backend does not write them again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.errors import ConfigError
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import TrainedModel
from ptycho_core.stitching import Stitched

__all__ = [
    "GRADIENT_TRAINING_FIELDS",
    "NETWORK_MODEL_FIELDS",
    "OneReconstructionPath",
    "Patterns",
    "place_on_canvas",
    "refuse_network_settings",
    "unique_patterns",
    "untrained_model",
]

GRADIENT_TRAINING_FIELDS: tuple[str, ...] = (
    "learning_rate",
    "lr_schedule",
    "lr_warmup_steps",
    "lr_plateau_factor",
    "lr_plateau_patience",
    "min_learning_rate",
)
"""``TrainingConfig`` fields that only a gradient optimiser uses."""
NETWORK_MODEL_FIELDS: tuple[str, ...] = (
    "n_filters_scale",
    "amp_activation",
    "object_big",
    "probe_big",
    "probe_mask",
    "pad_object",
    "gaussian_smoothing_sigma",
    "offset",
    "max_position_jitter",
)
"""``ModelConfig`` fields that describe the network's architecture."""


def refuse_network_settings(backend: str, config: TrainingConfig, method: str) -> None:
    """Raise :class:`ConfigError` when ``config`` changes a setting a solver without a
    network does not have (the protocol forbids ignoring a setting silently).

    ``method`` names the solver in the message, e.g. ``"ePIE"``.
    """
    defaults: Mapping[str, Any] = TrainingConfig().to_dict()
    model_defaults: Mapping[str, Any] = ModelConfig().to_dict()
    for name in GRADIENT_TRAINING_FIELDS:
        value = getattr(config, name)
        if value != defaults[name]:
            raise ConfigError(
                f"{backend}: TrainingConfig.{name}={value!r} is a setting of gradient "
                f"training, which {method} does not use; leave it at its default "
                f"{defaults[name]!r}"
            )
    for name in NETWORK_MODEL_FIELDS:
        value = getattr(config.model, name)
        if value != model_defaults[name]:
            raise ConfigError(
                f"{backend}: ModelConfig.{name}={value!r} describes a network, which {method} "
                f"does not have; leave it at its default {model_defaults[name]!r}"
            )
    if config.model.model_type != "pinn":
        raise ConfigError(
            f"{backend}: ModelConfig.model_type={config.model.model_type!r} is not supported; "
            f"{method} reconstructs from the diffraction data alone ('pinn')"
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class Patterns:
    """The distinct patterns behind a set of groups, each at its own position."""

    index: np.ndarray
    """(n,) int64 dataset index of each pattern, ascending."""
    x: np.ndarray
    """(n,) float64 probe-centre column in object pixels."""
    y: np.ndarray
    """(n,) float64 probe-centre row in object pixels."""
    amplitude: np.ndarray
    """(n, N, N) float32 normalised diffraction amplitude, zero frequency at (N/2, N/2)."""

    @property
    def n(self) -> int:
        return int(self.index.shape[0])


def unique_patterns(groups: GroupedData) -> Patterns:
    """Every pattern of ``groups`` once, at its own position.

    A pattern's position is its group centre minus its ``coords_relative`` (which holds
    −(position − centre)); for gridsize 1 it is the group centre itself.
    """
    C = groups.channels
    indices = groups.nn_indices.reshape(-1)
    unique, first = np.unique(indices, return_index=True)
    group, channel = np.divmod(first, C)
    centre = groups.coords_offsets[group, 0, :, 0]
    relative = groups.coords_relative[group, 0, :, channel].astype(np.float64)
    position = centre - relative if C > 1 else centre
    return Patterns(
        index=unique.astype(np.int64),
        x=np.asarray(position[:, 0], dtype=np.float64),
        y=np.asarray(position[:, 1], dtype=np.float64),
        amplitude=np.ascontiguousarray(groups.diffraction[group, :, :, channel], np.float32),
    )


def place_on_canvas(
    initial: Stitched, origin: tuple[int, int], shape: tuple[int, int], backend: str
) -> tuple[np.ndarray, np.ndarray]:
    """``initial``'s covered pixels on a solver's canvas, and which canvas pixels it covers.

    The canvas has ``shape`` and its pixel (0, 0) is object pixel ``origin``; both frames
    are in object pixels with integer origins, so this copies the overlapping block.
    Returns complex64 (H, W) (0 where not covered) and a boolean (H, W) coverage mask.
    """
    image = np.asarray(initial.image)
    covered = np.asarray(initial.covered, dtype=bool)
    if image.ndim != 2 or covered.shape != image.shape or len(initial.origin) != 2:
        raise ValueError(
            f"{backend}: initial_object: expected a 2-D image with a weight map of the same "
            f"shape and a (row, col) origin, found {image.shape}, {covered.shape}, "
            f"{initial.origin!r}"
        )
    if not np.all(np.isfinite(image[covered])):
        raise ValueError(f"{backend}: initial_object: the covered pixels hold NaN or inf")
    canvas = np.zeros(shape, dtype=np.complex64)
    mask = np.zeros(shape, dtype=bool)
    row = int(initial.origin[0]) - origin[0]  # canvas row of image row 0
    col = int(initial.origin[1]) - origin[1]
    r0, r1 = max(row, 0), min(row + image.shape[0], shape[0])
    c0, c1 = max(col, 0), min(col + image.shape[1], shape[1])
    if r0 < r1 and c0 < c1:
        block = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        mask[r0:r1, c0:c1] = covered[block]
        canvas[r0:r1, c0:c1] = np.where(covered[block], image[block], 0)
    return canvas, mask


def untrained_model(
    backend: str,
    probe: np.ndarray,
    config: TrainingConfig,
    network: Callable[[np.ndarray], Any],
    extra: Callable[[Any], Mapping[str, Any]],
) -> TrainedModel:
    """A ready model of ``backend`` for the normalised probe P̃, without training (what
    ``model_from_probe`` returns; specs/backend-protocol.md §9.2).

    The probe must be a finite (N, N) array for ``config.model.N``; ``network(probe)``
    builds the backend's state from it (complex64) and ``extra(state)`` the manifest's
    ``extra``. s₀ is the protocol's default for ``config.nphotons``.
    """
    if config.backend != backend:
        config = config.replace(backend=backend)
    N = config.model.N
    probe = np.asarray(probe)
    if probe.shape != (N, N) or not np.all(np.isfinite(probe)):
        raise ValueError(
            f"{backend}: model_from_probe: expected a finite ({N}, {N}) probe "
            f"(TrainingConfig.model.N), found shape {probe.shape}"
        )
    probe = probe.astype(np.complex64)
    state = network(probe)
    return TrainedModel(
        backend=backend,
        config=config,
        probe=probe,
        intensity_scale=math.sqrt(config.nphotons) / (N / 2),  # s₀, protocol §3.3
        network=state,
        history={},
        extra=dict(extra(state)),
    )


class OneReconstructionPath:
    """``infer`` (the solver's own start) and ``infer_from`` (a given start) as one path.

    An iterative backend that offers the initial-object capability implements
    ``_reconstruct(model, data, config, hooks, initial_object)``, with ``initial_object``
    None for ``infer``; this mixin provides the two protocol methods over it.
    """

    def _reconstruct(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        hooks: HookRelay,
        initial_object: Stitched | None,
    ) -> np.ndarray:
        raise NotImplementedError

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: HookRelay
    ) -> np.ndarray:
        """The solver from its own start; the object at the group centres (B, N, N, 1)."""
        return self._reconstruct(model, data, config, hooks, None)

    def infer_from(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        initial_object: Stitched,
        *,
        hooks: HookRelay,
    ) -> np.ndarray:
        """The solver from ``initial_object`` (scaled to the data, the solver's own start
        where it does not cover)."""
        return self._reconstruct(model, data, config, hooks, initial_object)

"""The framework adapter: what a shared suite asks of a backend's framework, in numpy.

Layouts, as in ``ptycho_core``: complex fields are numpy ``complex64``; physics-level
images are channels-first, ``(B, C, N, N)`` patches and ``(B, P, P)`` canvases, with
offsets ``(B, C, 2)`` in [x, y] order; model-level arrays are the data's channels-last
layout, diffraction ``x`` ``(B, N, N, C)``, ``coords_relative`` ``(B, 1, 2, C)``, and the
network's outputs ``(B, N, N, C)`` (objects ``(B, N, N, 1)``). Losses come back as floats,
means over every element.
"""

from __future__ import annotations

import abc
from types import ModuleType
from typing import Any

import numpy as np
from backend_helpers import small_config

from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.hooks import HookRelay
from ptycho_core.protocol import ReconstructionBackend, TrainingData


class Framework(abc.ABC):
    """One framework backend seen through numpy (see the module docstring for layouts)."""

    name: str
    """The backend's entry-point name, e.g. ``'pytorch'``."""
    other: str
    """The other built-in backend's name (for the backend-mismatch checks)."""
    physics: ModuleType
    """The backend's physics module (``MERGE_EPSILON``, ``canvas_padding``)."""
    training: ModuleType
    """The backend's training module (``build_network``, ``fit``)."""
    model: ModuleType
    """The backend's model module (``AMP_ACTIVATIONS``, ``get_activation``, ``PtychoPINN``)."""
    persistence: ModuleType
    """The backend's persistence module (``WEIGHTS_NAME``, the bundle's payload file)."""
    bundle_frameworks: tuple[str, ...]
    """The frameworks whose versions a bundle's manifest records."""
    kernel: str
    """The last part of a convolution kernel's weight name: ``'weight'`` or ``'kernel'``."""
    probe_weights: tuple[str, ...]
    """The weight names that hold the probe."""
    rate_rtol: float
    """Relative tolerance of a learning rate read back from the optimiser (0: exact)."""

    def __repr__(self) -> str:
        return f"<{self.name} framework>"

    def small_config(self, **changes: Any) -> TrainingConfig:
        """:func:`backend_helpers.small_config` for this backend."""
        return small_config(**{"backend": self.name, **changes})

    @abc.abstractmethod
    def backend(self) -> ReconstructionBackend:
        """A fresh instance of the backend."""

    # -- physics ------------------------------------------------------------------------------

    @abc.abstractmethod
    def translate(self, images: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        """``physics.translate`` of (M, H, W) real or complex images (any other rank is
        handed over as it is, for the shape checks)."""

    @abc.abstractmethod
    def extract_patches(self, canvas: np.ndarray, offsets: np.ndarray, N: int) -> np.ndarray:
        """(B, C, N, N) complex patches seen on a (B, P, P) complex canvas."""

    @abc.abstractmethod
    def merge_patches(self, patches: np.ndarray, offsets: np.ndarray, P: int) -> np.ndarray:
        """The (B, P, P) complex canvas merged from (B, C, N, N) complex patches."""

    @abc.abstractmethod
    def diffract(self, field: np.ndarray) -> np.ndarray:
        """Far-field amplitude of complex exit waves (..., N, N)."""

    @abc.abstractmethod
    def illuminate_and_diffract(self, patches: np.ndarray, probe: np.ndarray) -> np.ndarray:
        """Amplitude of (B, C, N, N) object patches times the (N, N) probe, as the model does."""

    @abc.abstractmethod
    def poisson_nll(self, predicted: np.ndarray, target: np.ndarray) -> float: ...

    @abc.abstractmethod
    def mae_loss(self, predicted: np.ndarray, target: np.ndarray) -> float: ...

    @abc.abstractmethod
    def poisson_deviance(self, predicted: np.ndarray, target: np.ndarray) -> float: ...

    @abc.abstractmethod
    def supervised_loss(
        self, amplitude: np.ndarray, phase: np.ndarray, target: np.ndarray
    ) -> float:
        """The supervised loss against complex object patches ``target``."""

    @abc.abstractmethod
    def gaussian_smooth(self, field: np.ndarray, sigma: float) -> np.ndarray:
        """3×3 Gaussian smoothing of a real or complex (..., N, N) field."""

    @abc.abstractmethod
    def effective_probe(self, probe: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The illuminating (N, N) complex probe, masked by ``mask`` when given."""

    # -- the network --------------------------------------------------------------------------

    @abc.abstractmethod
    def build_network(
        self,
        config: ModelConfig,
        probe: np.ndarray,
        intensity_scale: float,
        *,
        seed: int = 0,
        **kwargs: Any,
    ) -> Any:
        """``training.build_network``, initial weights fixed by ``seed``."""

    @abc.abstractmethod
    def set_log_gain(self, network: Any, value: float) -> None: ...

    @abc.abstractmethod
    def amplitude(self, network: Any, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """The training path's predicted amplitude (B, N, N, C), no gradients."""

    @abc.abstractmethod
    def predict_object(self, network: Any, x: np.ndarray, coords: np.ndarray) -> np.ndarray:
        """The inference path's (B, N, N, 1) complex object."""

    @abc.abstractmethod
    def generate(self, network: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The generator's amplitude and phase, (B, N, N, C or 1) each."""

    @abc.abstractmethod
    def amplitude_head(self, network: Any, x: np.ndarray) -> np.ndarray:
        """The amplitude decoder's path-1 head output before its activation (B, N/2, N/2, C)."""

    @abc.abstractmethod
    def activate(self, name: str, values: np.ndarray) -> np.ndarray:
        """``model.get_activation(name)`` applied to ``values``."""

    @abc.abstractmethod
    def offsets(self, network: Any, coords: np.ndarray) -> np.ndarray:
        """The network's (B, C, 2) offsets for ``coords_relative``."""

    @abc.abstractmethod
    def illuminating_probe(self, network: Any) -> np.ndarray:
        """The (N, N) complex probe as the network multiplies the object with it."""

    @abc.abstractmethod
    def network_probe(self, network: Any) -> np.ndarray:
        """The network's current (N, N) complex probe."""

    @abc.abstractmethod
    def weights(self, network: Any) -> dict[str, np.ndarray]:
        """Every weight of the network by its neutral name, as numpy copies."""

    @abc.abstractmethod
    def conv_shape(self, c_in: int, c_out: int) -> tuple[int, ...]:
        """The shape of a 3×3 convolution kernel from ``c_in`` to ``c_out`` channels."""

    @abc.abstractmethod
    def count(self, *layers: Any) -> int:
        """Number of values in the trainable weights of ``layers``."""

    @abc.abstractmethod
    def trainable_parameters(self, network: Any) -> int: ...

    @abc.abstractmethod
    def add_to_weights(self, layer: Any, delta: float) -> None:
        """Add ``delta`` to every weight of ``layer``, in place."""

    # -- training -----------------------------------------------------------------------------

    @abc.abstractmethod
    def step_rate_recorder(self) -> Any:
        """A callback of the framework's trainer that appends the rate of every optimiser
        step to its ``rates`` and the step's index to its ``steps``."""

    def fit_recording_rates(
        self,
        data: TrainingData,
        config: TrainingConfig,
        hooks: HookRelay,
        *,
        initial: Any = None,
    ) -> tuple[Any, dict[str, list[float]], list[float], list[int]]:
        """``training.fit``, with the rate and the index of every optimiser step:
        (network, history, rates, steps)."""
        recorder = self.step_rate_recorder()
        network, history = self.training.fit(
            data, config, hooks, initial=initial, callbacks=[recorder]
        )
        return network, history, recorder.rates, recorder.steps

    def global_state(self) -> tuple:
        """The process-global random generators and flags that training must leave as it
        found them, as plain comparable values."""
        kind, keys, *rest = np.random.get_state()
        return (kind, keys.tobytes(), *rest, *self.framework_state())

    @abc.abstractmethod
    def framework_state(self) -> tuple:
        """The framework's part of :meth:`global_state`."""

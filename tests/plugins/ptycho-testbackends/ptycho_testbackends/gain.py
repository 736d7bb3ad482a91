"""The 'numpy-gain' backend: a real, tiny, dependency-free ptycho backend.

Its model is one complex constant object c (the same transmission everywhere). The
physics is ptycho's: the predicted amplitude of a pattern is

    s₀ · A(c·P̃),   A(ψ) = sqrt(fftshift(|fft2(ψ)|²) / N²),

so it equals s₀ · |c| · A(P̃) and only |c| can be learned (a global phase is
invisible in the data). Training minimises the mean squared amplitude error against
the targets s₀·X_n by one gradient step on c per epoch (the gradient accumulated over
minibatches of ``config.batch_size``), each half the Newton step (the backend option
``newton_fraction``, ``--option newton_fraction=F``, sets another fraction): starting from c = 1,
after k epochs |c| = |c|* + (1 − |c|*)·2⁻ᵏ exactly, where |c|* is the least-squares
optimum, so the loss falls every epoch and the result is deterministic. ``train_from``
(the optional warm start) runs the same steps from a trained model's c instead of 1.
``infer`` returns c in every pixel of every patch. The fitted c is saved in
``payload/weights.npz`` (numpy arrays only, read back with ``allow_pickle=False``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ptycho_core.backend_options import BackendOption, real_in, resolve_backend_options
from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.errors import BundleError
from ptycho_core.grouping import GroupedData
from ptycho_core.protocol import TrainedModel, TrainingData

WEIGHTS_FILE = "weights.npz"


def probe_amplitude(probe: np.ndarray) -> np.ndarray:
    """A(P̃) in float64: the diffraction amplitude of the probe alone (object = 1)."""
    probe = np.asarray(probe, dtype=np.complex128)
    n = probe.shape[-1]
    intensity = np.abs(np.fft.fft2(probe)) ** 2 / n**2
    return np.sqrt(np.fft.fftshift(intensity, axes=(-2, -1)))


def _mse(c_abs: float, a_p: np.ndarray, data: TrainingData) -> float:
    """Mean over (B, N, N, C) of (s₀|c|A(P̃) − s₀X_n)²."""
    s0 = data.intensity_scale
    x = data.groups.diffraction.astype(np.float64)
    return float(np.mean((s0 * c_abs * a_p[None, :, :, None] - s0 * x) ** 2))


def constant_patches(
    model: TrainedModel, data: GroupedData, config: InferenceConfig, hooks: Any
) -> np.ndarray:
    """The fitted constant as every patch, batch by batch with progress reports."""
    out = np.empty((data.n_groups, data.N, data.N, 1), dtype=np.complex64)
    for start in range(0, data.n_groups, config.batch_size):
        stop = min(start + config.batch_size, data.n_groups)
        out[start:stop] = np.complex64(model.network)
        hooks.ptycho_infer_progress(done=stop, total=data.n_groups)
    return out


class NumpyGainBackend:
    """Fits a complex constant object to normalised diffraction amplitudes with numpy."""

    name = "numpy-gain"
    training_options: tuple[BackendOption, ...] = (
        BackendOption(
            "newton_fraction",
            "fraction of the Newton step taken each epoch",
            real_in(0.0, 1.0, low_open=True),
            default=0.5,
        ),
    )
    inference_options: tuple[BackendOption, ...] = ()

    def train(self, data: TrainingData, config: TrainingConfig, *, hooks: Any) -> TrainedModel:
        return self._fit(data, config, hooks, np.complex128(1.0))

    def _training_options(self, config: TrainingConfig) -> dict[str, Any]:
        return resolve_backend_options(
            self.name,
            config.backend_options,
            self.training_options,
            field="TrainingConfig.backend_options",
        )

    def _inference_options(self, config: InferenceConfig) -> dict[str, Any]:
        return resolve_backend_options(
            self.name,
            config.backend_options,
            self.inference_options,
            field="InferenceConfig.backend_options",
        )

    def train_from(
        self, model: TrainedModel, data: TrainingData, config: TrainingConfig, *, hooks: Any
    ) -> TrainedModel:
        """Continue from ``model``'s c (a new model; ``model`` is left as it is)."""
        c = model.payload(self.name, np.ndarray)
        model.check_refinable(config, self.name)
        return self._fit(data, config, hooks, np.complex128(c))

    def _fit(
        self, data: TrainingData, config: TrainingConfig, hooks: Any, c: np.complex128
    ) -> TrainedModel:
        fraction = self._training_options(config)["newton_fraction"]
        data.check_fits(config, self.name)
        train, validation = data.split(config.validation_split)
        hooks.ptycho_train_start(backend=self.name, config=config, n_groups=train.n_groups)
        a_p = probe_amplitude(data.probe)
        s0 = float(data.intensity_scale)
        mean_a2 = float(np.mean(a_p**2))
        # d loss / d|c| = 2 s₀² (|c|·mean(A²) − mean(A·X)); one step per epoch of half the
        # Newton step, so |c| − |c|* halves every epoch.
        step = fraction / (2 * s0**2 * mean_a2)
        history: dict[str, list[float]] = {"loss": []}
        if validation is not None:
            history["val_loss"] = []
        x_all = train.groups.diffraction
        size = x_all[..., 0].size * train.groups.channels
        for epoch in range(config.nepochs):
            mean_ax = 0.0  # accumulated over minibatches to bound memory
            for start in range(0, train.n_groups, config.batch_size):
                x = x_all[start : start + config.batch_size].astype(np.float64)
                mean_ax += float(np.sum(a_p[None, :, :, None] * x)) / size
            c_abs = abs(c)
            gradient = 2 * s0**2 * (c_abs * mean_a2 - mean_ax)
            c = c * (max(c_abs - step * gradient, 1e-12) / c_abs)
            losses = {"loss": _mse(abs(c), a_p, train)}
            if validation is not None:
                losses["val_loss"] = _mse(abs(c), a_p, validation)
            for key, value in losses.items():
                history[key].append(value)
            hooks.ptycho_epoch_end(epoch=epoch, nepochs=config.nepochs, losses=losses)
        hooks.ptycho_train_end(history=history)
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=np.asarray(data.probe, dtype=np.complex64),
            intensity_scale=s0,
            network=np.asarray(c, dtype=np.complex128),
            history=history,
            extra={"object_constant": [float(c.real), float(c.imag)]},
        )

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: Any
    ) -> np.ndarray:
        model.payload(self.name, np.ndarray)
        model.check_groups(data)
        config.require_no_iterations(self.name)
        self._inference_options(config)
        return constant_patches(model, data, config, hooks)

    def forward(
        self,
        model: TrainedModel,
        diffraction: np.ndarray,
        coords_relative: np.ndarray,
        *,
        precision: str = "32",
        accelerator: str = "auto",
    ) -> np.ndarray:
        """The optional bare forward of one batch (used by ``ptycho bench``)."""
        model.payload(self.name, np.ndarray)
        shape = (diffraction.shape[0], model.N, model.N, 1)
        return np.full(shape, np.complex64(model.network))

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        model.payload(self.name, np.ndarray)
        weights = np.asarray(model.network, dtype=np.complex128)

        def write_payload(folder: Any) -> None:
            np.savez(folder / WEIGHTS_FILE, c=weights)

        write_bundle(path, model, write_payload, framework={"numpy": np.__version__})

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        with read_bundle(path, expected_backend=self.name) as contents:
            weights_path = contents.payload_dir / WEIGHTS_FILE
            if not weights_path.is_file():
                raise BundleError(f"bundle {path}: payload file {WEIGHTS_FILE!r} is missing")
            with np.load(weights_path, allow_pickle=False) as weights:
                if "c" not in weights.files or weights["c"].shape != ():
                    raise BundleError(f"bundle {path}: {WEIGHTS_FILE} must hold a scalar 'c'")
                c = np.asarray(weights["c"], dtype=np.complex128)
            return contents.trained_model(c)

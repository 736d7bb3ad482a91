"""The PyTorch backend seen through numpy, for the shared suites (imports torch and Lightning)."""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from framework_suites.framework import Framework
from ptycho_core.architecture import C_OUTER
from ptycho_core.config import ModelConfig
from ptycho_torch import model, persistence, physics, training
from ptycho_torch.backend import TorchBackend

__all__ = ["TORCH", "TorchFramework"]


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _nchw(x: np.ndarray) -> torch.Tensor:
    return _tensor(x).permute(0, 3, 1, 2)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


class _StepRates(Callback):
    """The rate of every optimiser step, read from the optimiser just before it steps."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.steps: list[int] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        (rate,) = {group["lr"] for group in optimizer.param_groups}
        self.rates.append(rate)
        self.steps.append(trainer.global_step)


class TorchFramework(Framework):
    name = "pytorch"
    other = "tensorflow"
    physics = physics
    training = training
    model = model
    persistence = persistence
    bundle_frameworks = ("torch",)
    kernel = "weight"
    probe_weights = ("probe",)
    rate_rtol = 0.0  # the rate is a Python float in the optimiser's parameter groups

    def backend(self) -> TorchBackend:
        return TorchBackend()

    # -- physics ------------------------------------------------------------------------------

    def translate(self, images, dx, dy):
        shifts = (_tensor(np.asarray(v, np.float32)) for v in (dx, dy))
        return physics.translate(_tensor(images), *shifts).numpy()

    def extract_patches(self, canvas, offsets, N):
        return physics.extract_patches(_tensor(canvas)[:, None], _tensor(offsets), N).numpy()

    def merge_patches(self, patches, offsets, P):
        return physics.merge_patches(_tensor(patches), _tensor(offsets), P).numpy()[:, 0]

    def diffract(self, field):
        return physics.diffract(_tensor(field)).numpy()

    def illuminate_and_diffract(self, patches, probe):
        return physics.diffract(_tensor(patches) * _tensor(probe)).numpy()

    def poisson_nll(self, predicted, target):
        return physics.poisson_nll(_tensor(predicted), _tensor(target)).item()

    def mae_loss(self, predicted, target):
        return physics.mae_loss(_tensor(predicted), _tensor(target)).item()

    def poisson_deviance(self, predicted, target):
        return physics.poisson_deviance(_tensor(predicted), _tensor(target)).item()

    def supervised_loss(self, amplitude, phase, target):
        return physics.supervised_loss(_tensor(amplitude), _tensor(phase), _tensor(target)).item()

    def gaussian_smooth(self, field, sigma):
        return physics.gaussian_smooth(_tensor(field), sigma).numpy()

    def effective_probe(self, probe, mask=None):
        mask = None if mask is None else _tensor(mask)
        return physics.effective_probe(_tensor(probe), mask=mask).numpy()

    # -- the network --------------------------------------------------------------------------

    def build_network(
        self, config: ModelConfig, probe, intensity_scale, *, seed=0, **kwargs
    ) -> model.PtychoPINN:
        torch.manual_seed(seed)
        return training.build_network(config, probe, intensity_scale, **kwargs)

    def set_log_gain(self, network, value):
        with torch.no_grad():
            network.log_gain.fill_(value)

    def amplitude(self, network, x, coords):
        with torch.no_grad():
            return _nhwc(network(_nchw(x), _tensor(coords)).amplitude)

    def predict_object(self, network, x, coords):
        with torch.no_grad():
            return _nhwc(network.predict_object(_nchw(x), _tensor(coords)))

    def generate(self, network, x):
        with torch.no_grad():
            amp, phase = network.generate(_nchw(x))
        return _nhwc(amp), _nhwc(phase)

    def amplitude_head(self, network, x):
        decoder = network.decoder_amp
        with torch.no_grad():
            features = network.encoder(_nchw(x))
            for block in decoder.blocks:
                features = block(features)
            return _nhwc(decoder.head(features[:, :-C_OUTER]))

    def activate(self, name, values):
        return model.get_activation(name)(_tensor(values)).numpy()

    def offsets(self, network, coords):
        return network.offsets(_tensor(coords)).numpy()

    def illuminating_probe(self, network):
        return network.illuminating_probe().detach().numpy()

    def network_probe(self, network):
        return network.probe_array()

    def weights(self, network):
        return {name: t.detach().cpu().numpy().copy() for name, t in network.state_dict().items()}

    def conv_shape(self, c_in, c_out):
        return (c_out, c_in, 3, 3)

    def count(self, *layers):
        return sum(p.numel() for layer in layers for p in layer.parameters() if p.requires_grad)

    def trainable_parameters(self, network):
        return self.count(network)

    def add_to_weights(self, layer, delta):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(delta)

    # -- training -----------------------------------------------------------------------------

    def step_rate_recorder(self) -> _StepRates:
        return _StepRates()

    def framework_state(self) -> tuple:
        return (
            torch.get_rng_state().numpy().tobytes(),
            torch.are_deterministic_algorithms_enabled(),
        )


TORCH = TorchFramework()

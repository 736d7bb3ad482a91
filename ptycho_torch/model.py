"""The PtychoPINN generator and the full physics-informed network, in PyTorch.

Architecture (specs/model.md §3, the TensorFlow layer plan, so parameter counts and
weights match the Keras backend): an encoder of ConvPool blocks, two independent decoders
(amplitude, phase) of ConvUp blocks, and a final stage per decoder. With ``pad_object``
the last ``C_OUTER = 4`` decoder channels feed "path 2" (ConvUp → Conv → swish → border
mask, only with ``probe_big``) and the others feed "path 1" (Conv → activation, zero-padded
by N/4 per side): the object lives in the central N/2 box, the field around it is free.
Without ``pad_object`` a ConvUp → Conv → activation decodes the full N×N.

:class:`PtychoPINN` adds the physics of :mod:`ptycho_torch.physics`: merge canvas, patch
extraction, probe illumination, far-field amplitude and the output gain
``g = exp(log_gain)`` of the intensity-scale convention
(predicted amplitude = s₀ · g · A; the network input is the normalised X_n).

Tensors inside are NCHW-shaped and, when built from the core's NHWC arrays with
``permute(0, 3, 1, 2)``, channels-last in memory, the fast layout for CPU convolutions.

Parameter names are the framework-neutral hierarchy of :mod:`ptycho_core.architecture`
(``encoder.blocks.{i}.conv{k}``, ``decoder_amp.head``, ``log_gain``, …), which the weight
export of specs/backend-protocol.md §8.1 keys on and ``ptycho_tf`` mirrors; every
convolution has ``.weight`` and ``.bias``, and ``probe`` is the (N, N) complex64
normalised probe P̃.

Torch stores a convolution weight as (out, in, kh, kw); Keras as (kh, kw, in, out).
Non-persistent buffers (masks, s₀) are rebuilt from the manifest and not saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from itertools import pairwise
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ptycho_core import architecture
from ptycho_core.architecture import C_OUTER
from ptycho_core.config import ModelConfig
from ptycho_core.physics import probe_disk_mask
from ptycho_torch import physics

__all__ = [
    "AMP_ACTIVATIONS",
    "ConvPool",
    "ConvUp",
    "Decoder",
    "Encoder",
    "ModelOutput",
    "PtychoPINN",
    "get_activation",
    "phase_activation",
]

Activation = Callable[[torch.Tensor], torch.Tensor]

AMP_ACTIVATIONS: Mapping[str, Activation] = {
    "sigmoid": torch.sigmoid,
    "swish": F.silu,
    "softplus": F.softplus,
    "relu": F.relu,
}
"""Amplitude-head activations by config name ('silu' is accepted as an alias of 'swish')."""


def get_activation(name: str) -> Activation:
    """The amplitude activation called ``name``; unknown names raise ``ValueError`` listing the known."""
    return AMP_ACTIVATIONS[architecture.activation_name(name)]


def phase_activation(x: torch.Tensor) -> torch.Tensor:
    """π·tanh: the phase head's output range (−π, π)."""
    return math.pi * torch.tanh(x)


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    """3×3 'same' convolution with Keras' initialisation (Glorot uniform, zero bias)."""
    conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=True)
    nn.init.xavier_uniform_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class _ConvPair(nn.Module):
    """Conv-ReLU, Conv-ReLU (``conv0``, ``conv1``): the body ConvPool and ConvUp share."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = _conv(c_in, c_out)
        self.conv1 = _conv(c_out, c_out)

    def convolve(self, x: torch.Tensor) -> torch.Tensor:
        # in-place ReLU: a convolution's backward pass does not need its output (~8 % faster)
        return F.relu(self.conv1(F.relu(self.conv0(x), inplace=True)), inplace=True)


class ConvPool(_ConvPair):
    """Conv-ReLU, Conv-ReLU, 2×2 max-pool."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.convolve(x), 2)


class ConvUp(_ConvPair):
    """Conv-ReLU, Conv-ReLU, 2× nearest-neighbour upsampling (Keras ``UpSampling2D``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.convolve(x), scale_factor=2.0, mode="nearest")


class Encoder(nn.Module):
    """ConvPool blocks from N×N×C down to 8×8×128n."""

    def __init__(self, N: int, in_channels: int, n_filters_scale: int) -> None:
        super().__init__()
        filters = architecture.encoder_filters(N, n_filters_scale)
        widths = [in_channels, *filters]
        self.blocks = nn.ModuleList(ConvPool(a, b) for a, b in pairwise(widths))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _OuterPath(nn.Module):
    """Path 2: ConvUp(C_OUTER → n·2048/N) then Conv → head channels."""

    def __init__(self, c_in: int, width: int, out_channels: int) -> None:
        super().__init__()
        self.up = ConvUp(c_in, width)
        self.head = _conv(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.up(x))


class Decoder(nn.Module):
    """One decoder (amplitude or phase): ConvUp base, then the final stage."""

    def __init__(
        self,
        N: int,
        n_filters_scale: int,
        out_channels: int,
        activation: Activation,
        *,
        pad_object: bool,
        probe_big: bool,
    ) -> None:
        super().__init__()
        self.N = N
        self.activation = activation
        self.pad_object = pad_object
        filters = architecture.decoder_filters(N, n_filters_scale)
        widths = [n_filters_scale * 128, *filters]
        self.blocks = nn.ModuleList(ConvUp(a, b) for a, b in pairwise(widths))
        base = filters[-1]
        width = architecture.outer_filters(N, n_filters_scale)
        self.outer: _OuterPath | None = None
        self.up: ConvUp | None = None
        if pad_object:
            if base <= C_OUTER:
                raise ValueError(
                    f"n_filters_scale: expected decoder width 32·n > {C_OUTER}, found {base}"
                )
            self.head = _conv(base - C_OUTER, out_channels)
            if probe_big:
                self.outer = _OuterPath(C_OUTER, width, out_channels)
                self.register_buffer("border", physics.border_mask(N), persistent=False)
        else:
            self.up = ConvUp(base, width)
            self.head = _conv(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        if not self.pad_object:
            assert self.up is not None
            return self.activation(self.head(self.up(x)))
        inner = self.activation(self.head(x[:, :-C_OUTER]))
        pad = self.N // 4
        out = F.pad(inner, (pad, pad, pad, pad))
        if self.outer is not None:
            out = out + F.silu(self.outer(x[:, -C_OUTER:])) * self.border
        return out


class ModelOutput(NamedTuple):
    """What one training forward pass produces (NCHW-shaped tensors)."""

    object: torch.Tensor
    """(B, 1, N, N) complex64: central N×N of the canvas, the inference output."""
    amplitude: torch.Tensor
    """(B, C, N, N) float32: predicted diffraction amplitude s₀·g·A in sqrt-count units."""
    generated_amplitude: torch.Tensor
    """(B, C or 1, N, N): the generator's amplitude output (supervised targets)."""
    generated_phase: torch.Tensor
    """(B, C or 1, N, N): the generator's phase output."""


class PtychoPINN(nn.Module):
    """Generator + differentiable physics; everything it needs comes from its arguments.

    ``probe`` is the normalised P̃ (N, N) and ``intensity_scale`` the fixed s₀. The output
    gain starts at ``output_gain``, by default the calibrated g₀ of the probe
    (:func:`ptycho_core.architecture.initial_log_gain`), and trains iff
    ``intensity_scale_trainable``; the probe trains iff ``probe_trainable``.
    """

    def __init__(
        self,
        config: ModelConfig,
        probe: np.ndarray,
        intensity_scale: float,
        *,
        intensity_scale_trainable: bool = True,
        probe_trainable: bool = False,
        output_gain: float | None = None,
    ) -> None:
        super().__init__()
        probe = np.asarray(probe)
        log_gain = architecture.initial_log_gain(config, probe, intensity_scale, output_gain)
        N = config.N
        self.config = config
        self.N = N
        self.channels = config.channels
        self.canvas_size = config.canvas_size
        self.probe_trainable = bool(probe_trainable)
        head_channels = self.channels if config.object_big else 1
        self.encoder = Encoder(N, self.channels, config.n_filters_scale)
        decoder_args = {"pad_object": config.pad_object, "probe_big": config.probe_big}
        self.decoder_amp = Decoder(
            N,
            config.n_filters_scale,
            head_channels,
            get_activation(config.amp_activation),
            **decoder_args,
        )
        self.decoder_phase = Decoder(
            N, config.n_filters_scale, head_channels, phase_activation, **decoder_args
        )
        self.log_gain = nn.Parameter(
            torch.tensor(log_gain, dtype=torch.float32), requires_grad=intensity_scale_trainable
        )
        probe_tensor = torch.from_numpy(probe.astype(np.complex64))
        if probe_trainable:
            self.probe = nn.Parameter(probe_tensor)
        else:
            self.register_buffer("probe", probe_tensor)
        self.register_buffer(
            "intensity_scale",
            torch.tensor(float(intensity_scale), dtype=torch.float32),
            persistent=False,
        )
        mask = (
            torch.from_numpy(probe_disk_mask(N).astype(np.float32)) if config.probe_mask else None
        )
        self.register_buffer("probe_mask", mask, persistent=False)

    # -- pieces ---------------------------------------------------------------------------

    def generator_parameters(self) -> int:
        """Trainable parameters of the generator (encoder + decoders): specs/model.md §3.5."""
        modules = (self.encoder, self.decoder_amp, self.decoder_phase)
        return sum(p.numel() for m in modules for p in m.parameters() if p.requires_grad)

    @property
    def output_gain(self) -> float:
        """g = exp(log_gain), the trained output gain (stored in the bundle manifest)."""
        return float(math.exp(float(self.log_gain.detach().cpu())))

    def trainable_parameters(self) -> int:
        """Number of values the optimiser updates (generator, plus the gain when trainable)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def probe_array(self) -> np.ndarray:
        """The current probe P̃ as a complex64 (N, N) numpy copy."""
        return self.probe.detach().cpu().numpy().copy()

    def generate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Amplitude and phase (B, C or 1, N, N) from normalised diffraction x (B, C, N, N)."""
        features = self.encoder(x)
        return self.decoder_amp(features), self.decoder_phase(features)

    @staticmethod
    def offsets(coords_relative: torch.Tensor) -> torch.Tensor:
        """(B, 1, 2, C) core positions → (B, C, 2) [x, y] offsets with their group mean removed."""
        offsets = coords_relative[:, 0].transpose(1, 2).float()
        return offsets - offsets.mean(dim=1, keepdim=True)

    def canvas(self, obj: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The (B, 1, P, P) object canvas: merged patches (``object_big``) or the padded one."""
        if self.config.object_big:
            return physics.merge_patches(obj, offsets, self.canvas_size)
        return physics.pad_to_canvas(obj, self.canvas_size)

    def illuminating_probe(self) -> torch.Tensor:
        """P̃ as it multiplies the object: smoothed and masked when the config says so."""
        return physics.effective_probe(
            self.probe, sigma=self.config.gaussian_smoothing_sigma, mask=self.probe_mask
        )

    # -- passes ---------------------------------------------------------------------------

    def _object(self, x: torch.Tensor, coords_relative: torch.Tensor):
        amp, phase = self.generate(x)
        device_type = x.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            amp, phase = amp.float(), phase.float()
            # A·exp(iφ) written out: torch.polar's gradient assumes A ≥ 0, path 2 can be < 0.
            obj = torch.complex(amp * torch.cos(phase), amp * torch.sin(phase))
            offsets = self.offsets(coords_relative)
            canvas = self.canvas(obj, offsets)
        return amp, phase, offsets, canvas

    def predict_object(self, x: torch.Tensor, coords_relative: torch.Tensor) -> torch.Tensor:
        """Inference path: (B, 1, N, N) complex64 object at the group centres (no physics)."""
        _, _, _, canvas = self._object(x, coords_relative)
        return physics.trim_canvas(canvas, self.N)

    def forward(self, x: torch.Tensor, coords_relative: torch.Tensor) -> ModelOutput:
        """Training path: object, then extraction, illumination and diffraction per channel.

        ``x`` is (B, C, N, N) normalised amplitude X_n, ``coords_relative`` (B, 1, 2, C).
        """
        amp, phase, offsets, canvas = self._object(x, coords_relative)
        with torch.autocast(device_type=x.device.type, enabled=False):
            patches = physics.extract_patches(canvas, offsets, self.N)
            exit_wave = patches * self.illuminating_probe()
            amplitude = (
                self.intensity_scale * torch.exp(self.log_gain) * physics.diffract(exit_wave)
            )
            obj = physics.trim_canvas(canvas, self.N)
        return ModelOutput(obj, amplitude, amp, phase)

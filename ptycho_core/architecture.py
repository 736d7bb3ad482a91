"""The PtychoPINN network as numbers: filter plans, reserved channels, parameter counts.

Both framework backends build the same network layer for layer (specs/model.md §3);
the numbers that define it live here once, free of any framework, so that the two builds
cannot drift apart and a third implementation can read them off. Layer names and weight
layouts are in ``specs/backend-protocol.md`` §8.1.

The framework-neutral names of the layers, which both backends' weights and the neutral
weight arrays use. ``i`` counts blocks from the input side, ``k`` ∈ {0, 1} the two
convolutions of a block; every convolution has a kernel and a bias::

    encoder.blocks.{i}.conv{k}              ConvPool blocks (conv, relu, conv, relu, maxpool)
    decoder_amp.blocks.{i}.conv{k}          ConvUp blocks of the decoder base
    decoder_amp.head                        path 1 (pad_object) or the full-field conv
    decoder_amp.outer.up.conv{k}            path 2 ConvUp (pad_object and probe_big)
    decoder_amp.outer.head                  path 2 output conv
    decoder_amp.up.conv{k}                  full-field ConvUp (pad_object False)
    decoder_phase.…                         the same layout for the phase decoder
    log_gain                                scalar, g = exp(log_gain)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise

import numpy as np

from ptycho_core.config import ACTIVATION_ALIASES, AMP_ACTIVATIONS, SUPPORTED_N, ModelConfig
from ptycho_core.physics import initial_output_gain

__all__ = [
    "ACTIVATION_ALIASES",
    "C_OUTER",
    "GENERATOR_PARAMETERS",
    "activation_name",
    "check_buildable",
    "decoder_filters",
    "encoder_filters",
    "initial_arrays",
    "initial_log_gain",
    "neutral_shapes",
    "outer_filters",
]

C_OUTER = 4
"""Decoder channels reserved for path 2 (upstream TF's fixed value)."""

GENERATOR_PARAMETERS: Mapping[tuple[int, int], int] = {
    (64, 1): 2_331_772,
    (64, 2): 2_340_208,
    (128, 1): 4_661_212,
    (128, 2): 4_667_056,
    (256, 1): 12_912_268,
    (256, 2): 12_916_816,
}
"""Trainable generator parameters by (N, gridsize) at ``n_filters_scale`` 2, default heads
(specs/model.md §3.5); the output gain comes on top."""


def _levels(N: int) -> int:
    if N not in SUPPORTED_N:
        raise ValueError(f"N: expected one of {', '.join(map(str, SUPPORTED_N))}, found {N!r}")
    return int(math.log2(N // 8))


def encoder_filters(N: int, n_filters_scale: int) -> list[int]:
    """Filters of the ConvPool blocks: N=64 → 32n, 64n, 128n (one more halving block per doubling of N)."""
    levels = _levels(N)
    return [n_filters_scale * 128 // 2 ** (levels - 1 - i) for i in range(levels)]


def decoder_filters(N: int, n_filters_scale: int) -> list[int]:
    """Filters of the ConvUp blocks of each decoder base: N=64 → 64n, 32n; output at N/2."""
    levels = _levels(N)
    return [n_filters_scale * 32 * 2 ** (levels - 2 - i) for i in range(levels - 1)]


def outer_filters(N: int, n_filters_scale: int) -> int:
    """Filters of the path-2 / full-field ConvUp: n·2048/N (64 at N=64, n=2)."""
    _levels(N)
    return n_filters_scale * 2048 // N


def neutral_shapes(
    config: ModelConfig, *, probe_trainable: bool = False
) -> dict[str, tuple[int, ...]]:
    """Neutral name → shape of every array of the network ``config`` describes, in the order
    the layers run (specs/backend-protocol.md §8.1): what a model of it exports and imports.

    The framework backends read the same names and shapes off their built networks; this
    version needs none, for backends that build the network from the arrays alone.
    """
    check_buildable(config)
    N, n = config.N, config.n_filters_scale
    heads = config.channels if config.object_big else 1
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, c_in: int, c_out: int) -> None:
        shapes[f"{prefix}.kernel"] = (3, 3, c_in, c_out)
        shapes[f"{prefix}.bias"] = (c_out,)

    def pair(prefix: str, c_in: int, c_out: int) -> None:
        conv(f"{prefix}.conv0", c_in, c_out)
        conv(f"{prefix}.conv1", c_out, c_out)

    for i, (a, b) in enumerate(pairwise([config.channels, *encoder_filters(N, n)])):
        pair(f"encoder.blocks.{i}", a, b)
    base = decoder_filters(N, n)
    width = outer_filters(N, n)
    for decoder in ("decoder_amp", "decoder_phase"):
        for i, (a, b) in enumerate(pairwise([128 * n, *base])):
            pair(f"{decoder}.blocks.{i}", a, b)
        if config.pad_object:
            conv(f"{decoder}.head", base[-1] - C_OUTER, heads)
            if config.probe_big:
                pair(f"{decoder}.outer.up", C_OUTER, width)
                conv(f"{decoder}.outer.head", width, heads)
        else:
            pair(f"{decoder}.up", base[-1], width)
            conv(f"{decoder}.head", width, heads)
    shapes["log_gain"] = ()
    if probe_trainable:
        shapes["probe.real"] = shapes["probe.imag"] = (N, N)
    return shapes


def initial_arrays(
    config: ModelConfig,
    probe: np.ndarray,
    intensity_scale: float,
    *,
    seed: int = 0,
    probe_trainable: bool = False,
) -> dict[str, np.ndarray]:
    """Neutral arrays of a new network, as both framework backends start one: Glorot-uniform
    kernels, zero biases, the calibrated log gain (:func:`initial_log_gain`) and, when the
    probe trains, ``probe``'s parts. Seeded by ``seed`` (numpy's generator, so the values
    differ from a framework's start); for backends that run networks without training them.
    """
    log_gain = initial_log_gain(config, probe, intensity_scale)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, shape in neutral_shapes(config, probe_trainable=probe_trainable).items():
        if name.endswith(".kernel"):
            kh, kw, c_in, c_out = shape
            limit = math.sqrt(6.0 / (kh * kw * (c_in + c_out)))
            arrays[name] = rng.uniform(-limit, limit, shape).astype(np.float32)
        elif name == "log_gain":
            arrays[name] = np.array(log_gain, dtype=np.float32)
        elif name in ("probe.real", "probe.imag"):
            part = np.real(probe) if name == "probe.real" else np.imag(probe)
            arrays[name] = np.asarray(part, dtype=np.float32)
        else:
            arrays[name] = np.zeros(shape, dtype=np.float32)
    return arrays


def activation_name(name: str) -> str:
    """The canonical amplitude-activation name (aliases resolved); ``ValueError`` if unknown."""
    key = ACTIVATION_ALIASES.get(name, name)
    if key not in AMP_ACTIVATIONS:
        known = ", ".join(sorted([*AMP_ACTIVATIONS, *ACTIVATION_ALIASES]))
        raise ValueError(f"amp_activation: expected one of {known}, found {name!r}")
    return key


def check_buildable(config: ModelConfig) -> None:
    """Refuse configs that validate field by field but describe no network.

    A supervised model compares one generated patch per position with its target, so with
    several positions per group the generator must predict each of them (``object_big``).
    """
    if config.model_type == "supervised" and config.gridsize > 1 and not config.object_big:
        raise ValueError(
            "ModelConfig.object_big: expected True for a 'supervised' model with gridsize > 1 "
            "(the generator must predict one patch per position), found False"
        )


def initial_log_gain(
    config: ModelConfig,
    probe: np.ndarray,
    intensity_scale: float,
    output_gain: float | None = None,
) -> float:
    """log g, the output gain a new network starts at, after refusing what no network takes.

    Both backends' ``PtychoPINN`` call this first, so they refuse the same inputs with the
    same messages: a config that describes no network (:func:`check_buildable`), a probe
    that is not (N, N) and an s₀ that is not a finite number > 0. The gain is
    ``output_gain``, by default g₀ = :func:`ptycho_core.physics.initial_output_gain` of the
    probe (specs/model.md §3.4).
    """
    check_buildable(config)
    N = config.N
    if np.shape(probe) != (N, N):
        raise ValueError(f"probe: expected shape ({N}, {N}) for N={N}, found {np.shape(probe)}")
    if not (math.isfinite(intensity_scale) and intensity_scale > 0):
        raise ValueError(
            f"intensity_scale: expected a finite number > 0, found {intensity_scale!r}"
        )
    return math.log(initial_output_gain(probe) if output_gain is None else output_gain)

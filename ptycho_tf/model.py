"""The PtychoPINN generator and the full physics-informed network, in Keras 3 on TensorFlow.

Architecture (specs/backend-protocol.md §8.1, the TensorFlow layer plan; the same layers, names
and parameter counts as :mod:`ptycho_torch.model`): an encoder of ConvPool blocks, two
independent decoders (amplitude, phase) of ConvUp blocks, and a final stage per decoder.
With ``pad_object`` the last ``C_OUTER = 4`` decoder channels feed "path 2" (ConvUp → Conv
→ swish → border mask, only with ``probe_big``) and the others feed "path 1" (Conv →
activation, zero-padded by N/4 per side): the object lives in the central N/2 box, the
field around it is free. Without ``pad_object`` a ConvUp → Conv → activation decodes the
full N×N.

:class:`PtychoPINN` adds the physics of :mod:`ptycho_tf.physics`: merge canvas, patch
extraction, probe illumination, far-field amplitude and the output gain
``g = exp(log_gain)`` of the intensity-scale convention (predicted amplitude = s₀ · g · A;
the network input is the normalised X_n). Tensors are NHWC, the core's layout.

Every class is a registered serialisable Keras class (package ``ptycho``) with a
``get_config``; there are no Lambda layers. Precision is scoped to the model: with
``precision='bf16-mixed'`` the generator's layers get the ``mixed_bfloat16`` dtype policy
(float32 variables, bfloat16 compute) while the physics stays float32; the global Keras
policy is never read or changed.

Weight names are the framework-neutral hierarchy of :mod:`ptycho_core.architecture`
(``encoder.blocks.{i}.conv{k}``, ``decoder_amp.head``, ``log_gain``, …), shared with
``ptycho_torch`` and given by :meth:`PtychoPINN.named_weights` (specs/backend-protocol.md
§8.1): every convolution has ``.kernel`` (kh, kw, in, out) and ``.bias`` (out,), and the
probe is two (N, N) float32 weights, ``probe.real`` and ``probe.imag``, the parts of the
normalised probe P̃.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ptycho_core import architecture
from ptycho_core.architecture import C_OUTER
from ptycho_core.config import PRECISIONS, ModelConfig
from ptycho_core.physics import probe_disk_mask
from ptycho_tf import physics
from ptycho_tf._keras import keras, tf

__all__ = [
    "AMP_ACTIVATIONS",
    "KERAS_POLICIES",
    "ConvPool",
    "ConvUp",
    "Decoder",
    "Encoder",
    "OuterPath",
    "PtychoPINN",
    "child_seed",
    "get_activation",
    "phase_activation",
]

KERAS_POLICIES: Mapping[str, str] = {"32": "float32", "bf16-mixed": "mixed_bfloat16"}
"""ptycho precision names → the Keras dtype policy of the generator's layers."""

Activation = Callable[[tf.Tensor], tf.Tensor]


def phase_activation(x: tf.Tensor) -> tf.Tensor:
    """π·tanh: the phase head's output range (−π, π)."""
    return math.pi * tf.tanh(x)


AMP_ACTIVATIONS: Mapping[str, Activation] = {
    "sigmoid": tf.math.sigmoid,
    "swish": tf.nn.silu,
    "softplus": tf.math.softplus,
    "relu": tf.nn.relu,
}
"""Amplitude-head activations by config name ('silu' is accepted as an alias of 'swish')."""

_PHASE = "pi_tanh"
_HEAD_ACTIVATIONS: Mapping[str, Activation] = {**AMP_ACTIVATIONS, _PHASE: phase_activation}
_PACKAGE = "ptycho"


def get_activation(name: str) -> Activation:
    """The amplitude activation called ``name``; unknown names raise ``ValueError`` listing the known."""
    return AMP_ACTIVATIONS[architecture.activation_name(name)]


def _head_activation(name: str) -> Activation:
    if name == _PHASE:
        return phase_activation
    return get_activation(name)


def child_seed(seed: int, key: str) -> int:
    """A seed for the sub-layer ``key`` of a layer seeded with ``seed``.

    Every convolution's initial weights are a pure function of the model seed and the
    convolution's place in the hierarchy, never of a global generator or creation order.
    """
    state = np.random.SeedSequence([int(seed), *key.encode("utf-8")]).generate_state(1)
    return int(state[0] % (2**31 - 1))


def _conv(filters: int, name: str, seed: int, dtype: Any, activation: str | None = None):
    """3×3 'same' convolution, Glorot-uniform kernel (seeded), zero bias: Keras' defaults."""
    return keras.layers.Conv2D(
        filters,
        3,
        padding="same",
        use_bias=True,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        bias_initializer="zeros",
        name=name,
        dtype=dtype,
    )


def _with_channels(input_shape: Any, channels: int) -> tuple:
    shape = tuple(input_shape)
    return (*shape[:-1], channels)


def _spatial(input_shape: Any, factor: float) -> tuple:
    b, h, w, c = tuple(input_shape)
    return (b, None if h is None else int(h * factor), None if w is None else int(w * factor), c)


class _ConvPair(keras.layers.Layer):
    """Conv-ReLU, Conv-ReLU (``conv0``, ``conv1``): the body ConvPool and ConvUp share.

    A subclass adds its resampling layer in :meth:`add_resampling`, applies it in ``call``
    and scales the spatial size of its output by ``spatial_factor``.
    """

    spatial_factor = 1.0

    def __init__(self, filters: int, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.seed = int(seed)
        policy = self.dtype_policy
        self.conv0 = _conv(self.filters, "conv0", child_seed(self.seed, "conv0"), policy, "relu")
        self.conv1 = _conv(self.filters, "conv1", child_seed(self.seed, "conv1"), policy, "relu")
        self.add_resampling(policy)

    def add_resampling(self, policy: Any) -> None:
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        self.conv0.build(input_shape)
        self.conv1.build(_with_channels(input_shape, self.filters))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return _with_channels(_spatial(input_shape, self.spatial_factor), self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "seed": self.seed}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvPool(_ConvPair):
    """Conv-ReLU, Conv-ReLU, 2×2 max-pool."""

    spatial_factor = 0.5

    def add_resampling(self, policy: Any) -> None:
        self.pool = keras.layers.MaxPooling2D(2, name="pool", dtype=policy)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.pool(self.conv1(self.conv0(x)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvUp(_ConvPair):
    """Conv-ReLU, Conv-ReLU, 2× nearest-neighbour upsampling."""

    spatial_factor = 2.0

    def add_resampling(self, policy: Any) -> None:
        self.upsample = keras.layers.UpSampling2D(
            2, interpolation="nearest", name="upsample", dtype=policy
        )

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.upsample(self.conv1(self.conv0(x)))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Encoder(keras.layers.Layer):
    """ConvPool blocks from N×N×C down to 8×8×128n."""

    def __init__(self, N: int, n_filters_scale: int, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.N = int(N)
        self.n_filters_scale = int(n_filters_scale)
        self.seed = int(seed)
        policy = self.dtype_policy
        self.blocks = [
            ConvPool(f, seed=child_seed(self.seed, f"blocks.{i}"), name=f"blocks_{i}", dtype=policy)
            for i, f in enumerate(architecture.encoder_filters(self.N, self.n_filters_scale))
        ]

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "N": self.N,
            "n_filters_scale": self.n_filters_scale,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class OuterPath(keras.layers.Layer):
    """Path 2: ConvUp(C_OUTER → n·2048/N) then Conv → head channels."""

    def __init__(self, width: int, out_channels: int, *, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width = int(width)
        self.out_channels = int(out_channels)
        self.seed = int(seed)
        policy = self.dtype_policy
        self.up = ConvUp(self.width, seed=child_seed(self.seed, "up"), name="up", dtype=policy)
        self.head = _conv(self.out_channels, "head", child_seed(self.seed, "head"), policy)

    def build(self, input_shape: Any) -> None:
        self.up.build(input_shape)
        self.head.build(self.up.compute_output_shape(input_shape))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return self.head(self.up(x))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "width": self.width,
            "out_channels": self.out_channels,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Decoder(keras.layers.Layer):
    """One decoder (amplitude or phase): ConvUp base, then the final stage.

    ``activation`` is an amplitude activation name or ``'pi_tanh'`` for the phase head.
    """

    def __init__(
        self,
        N: int,
        n_filters_scale: int,
        out_channels: int,
        activation: str,
        *,
        pad_object: bool = True,
        probe_big: bool = True,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.N = int(N)
        self.n_filters_scale = int(n_filters_scale)
        self.out_channels = int(out_channels)
        self.activation_name = str(activation)
        self.activation = _head_activation(self.activation_name)
        self.pad_object = bool(pad_object)
        self.probe_big = bool(probe_big)
        self.seed = int(seed)
        policy = self.dtype_policy
        filters = architecture.decoder_filters(self.N, self.n_filters_scale)
        self.blocks = [
            ConvUp(f, seed=child_seed(self.seed, f"blocks.{i}"), name=f"blocks_{i}", dtype=policy)
            for i, f in enumerate(filters)
        ]
        base = filters[-1]
        width = architecture.outer_filters(self.N, self.n_filters_scale)
        self.outer: OuterPath | None = None
        self.up: ConvUp | None = None
        self.border: np.ndarray | None = None
        if self.pad_object:
            if base <= C_OUTER:
                raise ValueError(
                    f"n_filters_scale: expected decoder width 32·n > {C_OUTER}, found {base}"
                )
            self.head = _conv(self.out_channels, "head", child_seed(self.seed, "head"), policy)
            if self.probe_big:
                self.outer = OuterPath(
                    width,
                    self.out_channels,
                    seed=child_seed(self.seed, "outer"),
                    name="outer",
                    dtype=policy,
                )
                self.border = physics.border_mask(self.N)[:, :, None]
        else:
            self.up = ConvUp(width, seed=child_seed(self.seed, "up"), name="up", dtype=policy)
            self.head = _conv(self.out_channels, "head", child_seed(self.seed, "head"), policy)

    def build(self, input_shape: Any) -> None:
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        channels = shape[-1]
        if self.pad_object:
            self.head.build(_with_channels(shape, channels - C_OUTER))
            if self.outer is not None:
                self.outer.build(_with_channels(shape, C_OUTER))
        else:
            self.up.build(shape)
            self.head.build(self.up.compute_output_shape(shape))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        for block in self.blocks:
            x = block(x)
        if not self.pad_object:
            return self.activation(self.head(self.up(x)))
        inner = self.activation(self.head(x[..., :-C_OUTER]))
        pad = self.N // 4
        out = tf.pad(inner, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        if self.outer is not None:
            outer = tf.nn.silu(self.outer(x[..., -C_OUTER:]))
            out = out + outer * tf.constant(self.border, dtype=outer.dtype)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "N": self.N,
            "n_filters_scale": self.n_filters_scale,
            "out_channels": self.out_channels,
            "activation": self.activation_name,
            "pad_object": self.pad_object,
            "probe_big": self.probe_big,
            "seed": self.seed,
        }


class _Compiled:
    """Compiled predict functions and bfloat16 twins of one network.

    A plain object on purpose: Keras neither tracks nor saves what it holds, so the
    cached functions never appear among the network's weights.
    """

    def __init__(self) -> None:
        self.functions: dict[tuple[str, str | None], Any] = {}
        self.twins: dict[str, PtychoPINN] = {}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PtychoPINN(keras.Model):
    """Generator + differentiable physics; everything it needs comes from its arguments.

    ``probe`` is the normalised P̃ (N, N) and ``intensity_scale`` the fixed s₀. The output
    gain starts at ``output_gain``, by default the calibrated g₀ of the probe
    (:func:`ptycho_core.architecture.initial_log_gain`), and trains iff
    ``intensity_scale_trainable``; the probe trains iff ``probe_trainable``. ``seed`` fixes
    the initial weights; ``precision`` the dtype policy of the generator's layers.

    Calling the model, ``model((diffraction, coords_relative))``, gives the training
    output: the predicted diffraction amplitude (B, N, N, C) in sqrt-count units for a
    ``'pinn'`` model, the generator's amplitude and phase concatenated on the channel
    axis for a ``'supervised'`` one. :meth:`predict_object` is the inference path.
    """

    def __init__(
        self,
        model_config: ModelConfig | Mapping[str, Any],
        probe: Any,
        intensity_scale: float,
        *,
        intensity_scale_trainable: bool = True,
        probe_trainable: bool = False,
        seed: int = 0,
        precision: str = "32",
        output_gain: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "ptycho_pinn")
        kwargs["dtype"] = "float32"  # the physics is float32 whatever the global policy
        super().__init__(**kwargs)
        config = (
            model_config
            if isinstance(model_config, ModelConfig)
            else ModelConfig.from_dict(model_config)
        )
        probe = _probe_array(probe)
        log_gain = architecture.initial_log_gain(config, probe, intensity_scale, output_gain)
        N = config.N
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}"
            )
        self.model_config = config
        self.N = N
        self.channels = config.channels
        self.canvas_size = config.canvas_size
        self.intensity_scale = float(intensity_scale)
        self.intensity_scale_trainable = bool(intensity_scale_trainable)
        self.probe_trainable = bool(probe_trainable)
        self.seed = int(seed)
        self.precision = precision
        policy = KERAS_POLICIES[precision]
        head_channels = self.channels if config.object_big else 1
        nfs = config.n_filters_scale
        decoder_args = {"pad_object": config.pad_object, "probe_big": config.probe_big}
        self.encoder = Encoder(
            N, nfs, seed=child_seed(self.seed, "encoder"), name="encoder", dtype=policy
        )
        self.decoder_amp = Decoder(
            N,
            nfs,
            head_channels,
            config.amp_activation,
            seed=child_seed(self.seed, "decoder_amp"),
            name="decoder_amp",
            dtype=policy,
            **decoder_args,
        )
        self.decoder_phase = Decoder(
            N,
            nfs,
            head_channels,
            _PHASE,
            seed=child_seed(self.seed, "decoder_phase"),
            name="decoder_phase",
            dtype=policy,
            **decoder_args,
        )
        # A supervised model never runs the physics: its gain and probe get no gradient.
        physics_trains = config.model_type == "pinn"
        self.log_gain = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(log_gain),
            trainable=self.intensity_scale_trainable and physics_trains,
            name="log_gain",
        )
        self.probe_real = self.add_weight(
            shape=(N, N),
            initializer="zeros",
            trainable=self.probe_trainable and physics_trains,
            name="probe_real",
        )
        self.probe_imag = self.add_weight(
            shape=(N, N),
            initializer="zeros",
            trainable=self.probe_trainable and physics_trains,
            name="probe_imag",
        )
        self.probe_real.assign(probe.real.astype(np.float32))
        self.probe_imag.assign(probe.imag.astype(np.float32))
        self.probe_mask = probe_disk_mask(N).astype(np.float32) if config.probe_mask else None
        self._compiled = _Compiled()

    # -- building and bookkeeping ---------------------------------------------------------

    def build(self, input_shape: Any = None) -> None:
        """Create every variable (called by :func:`~ptycho_tf.training.build_network`)."""
        shape = (None, self.N, self.N, self.channels)
        self.encoder.build(shape)
        encoded = (None, 8, 8, self.model_config.n_filters_scale * 128)
        self.decoder_amp.build(encoded)
        self.decoder_phase.build(encoded)
        self.built = True

    def get_config(self) -> dict[str, Any]:
        probe = self.probe_array()
        return {
            "name": self.name,
            "model_config": self.model_config.to_dict(),
            "probe": [probe.real.tolist(), probe.imag.tolist()],
            "intensity_scale": self.intensity_scale,
            "intensity_scale_trainable": self.intensity_scale_trainable,
            "probe_trainable": self.probe_trainable,
            "seed": self.seed,
            "precision": self.precision,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PtychoPINN:
        config = dict(config)
        config.pop("dtype", None)
        real, imag = config.pop("probe")
        probe = np.asarray(real, dtype=np.float32) + 1j * np.asarray(imag, dtype=np.float32)
        return cls(config.pop("model_config"), probe, **config)

    def probe_array(self) -> np.ndarray:
        """The current probe P̃ as complex64 (N, N)."""
        real = np.asarray(self.probe_real.numpy(), dtype=np.float32)
        imag = np.asarray(self.probe_imag.numpy(), dtype=np.float32)
        return (real + 1j * imag).astype(np.complex64)

    @property
    def output_gain(self) -> float:
        """g = exp(log_gain), the trained output gain (stored in the bundle manifest)."""
        return float(math.exp(float(self.log_gain.numpy())))

    def generator_parameters(self) -> int:
        """Trainable parameters of the generator (encoder + decoders)."""
        layers = (self.encoder, self.decoder_amp, self.decoder_phase)
        return sum(int(np.prod(v.shape)) for layer in layers for v in layer.trainable_weights)

    def trainable_parameters(self) -> int:
        """Number of values the optimiser updates (generator, plus the gain when trainable)."""
        return sum(int(np.prod(v.shape)) for v in self.trainable_weights)

    def named_weights(self) -> dict[str, Any]:
        """Neutral weight name → Keras variable, for every variable of the network."""
        names: dict[str, Any] = {}

        def conv(prefix: str, layer: Any) -> None:
            names[f"{prefix}.kernel"] = layer.kernel
            names[f"{prefix}.bias"] = layer.bias

        def block(prefix: str, layer: ConvPool | ConvUp) -> None:
            conv(f"{prefix}.conv0", layer.conv0)
            conv(f"{prefix}.conv1", layer.conv1)

        for i, layer in enumerate(self.encoder.blocks):
            block(f"encoder.blocks.{i}", layer)
        for name in ("decoder_amp", "decoder_phase"):
            decoder: Decoder = getattr(self, name)
            for i, layer in enumerate(decoder.blocks):
                block(f"{name}.blocks.{i}", layer)
            conv(f"{name}.head", decoder.head)
            if decoder.outer is not None:
                block(f"{name}.outer.up", decoder.outer.up)
                conv(f"{name}.outer.head", decoder.outer.head)
            if decoder.up is not None:
                block(f"{name}.up", decoder.up)
        names["log_gain"] = self.log_gain
        names["probe.real"] = self.probe_real
        names["probe.imag"] = self.probe_imag
        return names

    # -- pieces ---------------------------------------------------------------------------

    def generate(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Amplitude and phase (B, N, N, C or 1), float32, from normalised diffraction (B, N, N, C)."""
        features = self.encoder(x)
        amp = tf.cast(self.decoder_amp(features), tf.float32)
        phase = tf.cast(self.decoder_phase(features), tf.float32)
        return amp, phase

    @staticmethod
    def offsets(coords_relative: tf.Tensor) -> tf.Tensor:
        """(B, 1, 2, C) core positions → (B, C, 2) [x, y] offsets with their group mean removed."""
        offsets = tf.transpose(tf.cast(coords_relative[:, 0], tf.float32), (0, 2, 1))
        return offsets - tf.reduce_mean(offsets, axis=1, keepdims=True)

    def canvas(self, parts: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        """The (B, 2, P, P) [real, imag] canvas: merged patches (``object_big``) or the padded one."""
        if self.model_config.object_big:
            return physics.merge_patches(parts, offsets, self.canvas_size)
        return physics.pad_to_canvas(parts[:, 0], self.canvas_size)

    def illuminating_probe(self) -> tf.Tensor:
        """P̃ as it multiplies the object, (2, N, N) [real, imag]: smoothed and masked per config."""
        parts = tf.stack(
            [tf.convert_to_tensor(self.probe_real), tf.convert_to_tensor(self.probe_imag)]
        )
        mask = None if self.probe_mask is None else tf.constant(self.probe_mask)
        return physics.effective_probe(
            parts, sigma=self.model_config.gaussian_smoothing_sigma, mask=mask
        )

    def _object(self, x: tf.Tensor, coords_relative: tf.Tensor):
        amp, phase = self.generate(x)
        amp_c = tf.transpose(amp, (0, 3, 1, 2))  # (B, C or 1, N, N)
        phase_c = tf.transpose(phase, (0, 3, 1, 2))
        parts = tf.stack([amp_c * tf.cos(phase_c), amp_c * tf.sin(phase_c)], axis=2)
        offsets = self.offsets(coords_relative)
        return amp, phase, offsets, self.canvas(parts, offsets)

    # -- passes ---------------------------------------------------------------------------

    def predict_object(self, x: tf.Tensor, coords_relative: tf.Tensor) -> tf.Tensor:
        """Inference path: (B, N, N, 1) complex64 object at the group centres (no physics)."""
        _, _, _, canvas = self._object(x, coords_relative)
        trimmed = physics.trim_canvas(canvas, self.N)
        return tf.complex(trimmed[:, 0], trimmed[:, 1])[..., None]

    def diffraction_amplitude(self, x: tf.Tensor, coords_relative: tf.Tensor) -> tf.Tensor:
        """Training path: predicted amplitude s₀·g·A (B, N, N, C) in sqrt-count units."""
        _, _, offsets, canvas = self._object(x, coords_relative)
        patches = physics.extract_patches(canvas, offsets, self.N)
        exit_wave = physics.illuminate(patches, self.illuminating_probe())
        amplitude = self.intensity_scale * tf.exp(self.log_gain) * physics.diffract(exit_wave)
        return tf.transpose(amplitude, (0, 2, 3, 1))

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        diffraction, coords_relative = inputs
        diffraction = tf.cast(diffraction, tf.float32)
        if self.model_config.model_type == "supervised":
            amp, phase = self.generate(diffraction)
            return tf.concat([amp, phase], axis=-1)
        return self.diffraction_amplitude(diffraction, coords_relative)

    # -- compiled inference -----------------------------------------------------------------

    def predictor(
        self, precision: str = "32", device: str | None = None
    ) -> Callable[[Any, Any], tf.Tensor]:
        """A compiled ``predict_object`` (one trace for any batch size), cached per precision
        and device; call it inside ``tf.device(device)``.

        For ``'bf16-mixed'`` it runs a twin of this network whose generator computes in
        bfloat16; the twin's weights are refreshed from this network on every call of
        this method.
        """
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, found {precision!r}"
            )
        target = self if precision == "32" else self._twin(precision)
        key = (precision, device)
        function = self._compiled.functions.get(key)
        if function is None:
            signature = [
                tf.TensorSpec((None, self.N, self.N, self.channels), tf.float32),
                tf.TensorSpec((None, 1, 2, self.channels), tf.float32),
            ]
            function = tf.function(
                target.predict_object,
                input_signature=signature,
                reduce_retracing=True,
                autograph=False,  # static Python control flow only: plain tracing is enough
            )
            self._compiled.functions[key] = function
        return function

    def sibling(self, precision: str = "32", **kwargs: Any) -> PtychoPINN:
        """A new, built network with this one's architecture, probe, s₀, trainability and
        seed, at ``precision``; its weights are its own (the caller copies what it needs)."""
        network = PtychoPINN(
            self.model_config,
            self.probe_array(),
            self.intensity_scale,
            intensity_scale_trainable=self.intensity_scale_trainable,
            probe_trainable=self.probe_trainable,
            seed=self.seed,
            precision=precision,
            **kwargs,
        )
        network.build()
        return network

    def _twin(self, precision: str) -> PtychoPINN:
        twin = self._compiled.twins.get(precision)
        if twin is None:
            twin = self.sibling(precision, name=f"{self.name}_{precision.replace('-', '_')}")
            self._compiled.twins[precision] = twin
        for mine, theirs in zip(self.weights, twin.weights, strict=True):
            theirs.assign(mine)
        return twin


def _probe_array(probe: Any) -> np.ndarray:
    probe = np.asarray(probe)
    if not np.issubdtype(probe.dtype, np.number):
        raise ValueError(f"probe: expected a numeric array, found dtype {probe.dtype}")
    return probe.astype(np.complex64)

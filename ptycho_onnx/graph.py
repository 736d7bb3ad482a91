"""The PtychoPINN generator as an ONNX graph, built from framework-neutral weights.

The graph is written from the architecture's definition (specs/model.md §3) and the neutral
arrays of specs/backend-protocol.md §8.1, not traced from a framework: a model trained by
either framework backend gives the same graph for the same weights, no exporter of either
framework is involved, and nothing but standard ONNX operators appears in it. Building needs
the ``onnx`` package (the ``onnx-export`` extra); running the graph needs only ONNX Runtime.

Inputs and outputs (specs/bundle-format.md, the ``onnx`` payload), channels-last as the core's
arrays, with a free batch dimension:

- ``diffraction``: float32 (batch, N, N, C), the normalised patterns X_n of each group;
- ``amplitude`` and ``phase``: float32 (batch, N, N, H), the generator's output, H = C with
  ``object_big`` and 1 without.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ptycho_core import architecture
from ptycho_core.architecture import C_OUTER
from ptycho_core.config import ModelConfig
from ptycho_core.physics import border_mask

__all__ = ["INPUT", "OPSET", "OUTPUTS", "build_generator", "import_onnx"]

OPSET = 17
"""The ONNX operator set of exported graphs (every operator used is in it unchanged)."""
INPUT = "diffraction"
OUTPUTS = ("amplitude", "phase")
_KERNEL_TO_ONNX = (3, 2, 0, 1)  # neutral (kh, kw, in, out) → ONNX Conv W (out, in, kh, kw)


def import_onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError as error:
        raise RuntimeError(
            "exporting to ONNX needs the 'onnx' package: pip install 'ptycho[onnx-export]'"
        ) from error
    return onnx


class _Builder:
    """Accumulates nodes and initialisers; every tensor name is unique and says where it is."""

    def __init__(self, onnx: Any, arrays: Mapping[str, np.ndarray]) -> None:
        self.onnx = onnx
        self.arrays = arrays
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes: Any) -> str:
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def conv(self, x: str, prefix: str, *, upsampled: bool = False) -> str:
        """The 3×3 'same' convolution ``prefix``; with ``upsampled``, of ``x`` upsampled 2×
        (nearest), computed on ``x`` itself (:func:`_folded_upsampling`)."""
        kernel = np.asarray(self.arrays[f"{prefix}.kernel"], dtype=np.float32)
        bias = np.asarray(self.arrays[f"{prefix}.bias"], np.float32)
        if upsampled:
            kernel, bias = _folded_upsampling(kernel), np.tile(bias, 4)
        weight = self.constant(f"{prefix}.weight", kernel.transpose(_KERNEL_TO_ONNX))
        inputs = [x, weight, self.constant(f"{prefix}.bias", bias)]
        name = f"{prefix}.phases" if upsampled else f"{prefix}.out"
        out = self.node("Conv", inputs, name, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        if not upsampled:
            return out
        return self.node("DepthToSpace", [out], f"{prefix}.out", blocksize=2, mode="DCR")

    def conv_pair(self, x: str, prefix: str, *, upsampled: bool = False) -> str:
        x = self.conv(x, f"{prefix}.conv0", upsampled=upsampled)
        x = self.node("Relu", [x], f"{prefix}.relu0")
        return self.node("Relu", [self.conv(x, f"{prefix}.conv1")], f"{prefix}.relu1")

    def conv_pool(self, x: str, prefix: str) -> str:
        x = self.conv_pair(x, prefix)
        return self.node("MaxPool", [x], f"{prefix}.pool", kernel_shape=[2, 2], strides=[2, 2])

    def channels(self, x: str, begin: int, end: int, name: str) -> str:
        starts = self.constant(f"{name}.starts", np.array([begin], dtype=np.int64))
        ends = self.constant(f"{name}.ends", np.array([end], dtype=np.int64))
        axes = self.constant(f"{name}.axes", np.array([1], dtype=np.int64))
        return self.node("Slice", [x, starts, ends, axes], name)

    def activation(self, x: str, kind: str, name: str) -> str:
        if kind == "phase":  # π·tanh
            pi = self.constant(f"{name}.pi", np.array(math.pi, dtype=np.float32))
            return self.node("Mul", [self.node("Tanh", [x], f"{name}.tanh"), pi], name)
        if kind == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x], f"{name}.sigmoid")], name)
        op = {"sigmoid": "Sigmoid", "softplus": "Softplus", "relu": "Relu"}[kind]
        return self.node(op, [x], name)

    def decoder(self, x: str, prefix: str, config: ModelConfig, activation: str) -> str:
        N, n = config.N, config.n_filters_scale
        base = architecture.decoder_filters(N, n)
        # Every ConvUp's upsampling is folded into the convolution that follows it (a
        # channel slice in between commutes with it), so ``x`` is never upsampled itself.
        for i in range(len(base)):
            x = self.conv_pair(x, f"{prefix}.blocks.{i}", upsampled=i > 0)
        if not config.pad_object:
            x = self.conv_pair(x, f"{prefix}.up", upsampled=True)
            x = self.conv(x, f"{prefix}.head", upsampled=True)
            return self.activation(x, activation, f"{prefix}.activation")
        width = base[-1]
        inner = self.channels(x, 0, width - C_OUTER, f"{prefix}.inner")
        inner = self.activation(
            self.conv(inner, f"{prefix}.head", upsampled=True), activation, f"{prefix}.activation"
        )
        pad = N // 4
        pads = self.constant(f"{prefix}.pads", np.array([0, 0, pad, pad, 0, 0, pad, pad], np.int64))
        out = self.node("Pad", [inner, pads], f"{prefix}.padded")
        if not config.probe_big:
            return out
        outer = self.channels(x, width - C_OUTER, width, f"{prefix}.outer")
        outer = self.conv_pair(outer, f"{prefix}.outer.up", upsampled=True)
        outer = self.conv(outer, f"{prefix}.outer.head", upsampled=True)
        outer = self.activation(outer, "swish", f"{prefix}.outer.swish")
        mask = self.constant(f"{prefix}.border", border_mask(N)[None, None])
        outer = self.node("Mul", [outer, mask], f"{prefix}.outer.masked")
        return self.node("Add", [out, outer], f"{prefix}.field")


_PHASE_TAPS = np.array(
    [
        [[1, 0, 0], [0, 1, 1], [0, 0, 0]],  # even output rows: taps −1 | 0, +1 of the input
        [[0, 0, 0], [1, 1, 0], [0, 0, 1]],  # odd output rows: taps −1, 0 | +1
    ],
    dtype=np.float32,
)
"""``_PHASE_TAPS[i][o, t]``: 1 when tap ``t`` (−1, 0, +1) of a 3×3 kernel on the 2×
nearest-upsampled image reads input offset ``o`` (−1, 0, +1) for output rows of parity ``i``:
row 2h + i + t of the upsampled image is input row h + ⌊(i + t)/2⌋."""


def _folded_upsampling(kernel: np.ndarray) -> np.ndarray:
    """The kernel (3, 3, in, 4·out) that, followed by DepthToSpace(2, 'DCR'), computes the
    (3, 3, in, out) ``kernel`` applied after a 2× nearest upsampling.

    Output channel ``(2i + j)·out + c`` holds the pixels of parity (row i, column j): its
    taps are the original ones summed by the input pixel they read. The same products, in
    one convolution at the input's resolution, with no upsampled image in between; 'same'
    zero padding maps onto itself (a tap outside the upsampled image reads outside the input).
    """
    phases = [
        np.einsum("ar,bs,rsio->abio", _PHASE_TAPS[i], _PHASE_TAPS[j], kernel)
        for i in (0, 1)
        for j in (0, 1)
    ]
    return np.concatenate(phases, axis=3).astype(np.float32)


def build_generator(
    arrays: Mapping[str, np.ndarray], config: ModelConfig, *, producer: str = "ptycho"
) -> Any:
    """The generator of ``config`` holding ``arrays`` (checked neutral weights), as an
    ``onnx.ModelProto`` that passes the ONNX checker."""
    onnx = import_onnx()
    helper = onnx.helper
    builder = _Builder(onnx, arrays)
    x = builder.node("Transpose", [INPUT], "nchw", perm=[0, 3, 1, 2])
    for i in range(len(architecture.encoder_filters(config.N, config.n_filters_scale))):
        x = builder.conv_pool(x, f"encoder.blocks.{i}")
    activation = architecture.activation_name(config.amp_activation)
    for output, prefix, kind in zip(
        OUTPUTS, ("decoder_amp", "decoder_phase"), (activation, "phase"), strict=True
    ):
        field = builder.decoder(x, prefix, config, kind)
        builder.node("Transpose", [field], output, perm=[0, 2, 3, 1])
    N, heads = config.N, config.channels if config.object_big else 1
    graph = helper.make_graph(
        builder.nodes,
        "ptychopinn_generator",
        [
            helper.make_tensor_value_info(
                INPUT, onnx.TensorProto.FLOAT, ["batch", N, N, config.channels]
            )
        ],
        [
            helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", N, N, heads])
            for name in OUTPUTS
        ],
        builder.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer
    )
    model.ir_version = 8  # the IR of opset 17: readable by every runtime that runs the opset
    onnx.checker.check_model(model, full_check=True)
    return model

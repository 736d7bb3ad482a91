"""The ONNX Runtime session an exported generator runs in, and the check of its signature.

Session settings, measured on a 2-core AVX-512 CPU (README, "The backends compared"): all
graph optimisations (ORT fuses Conv + activation and reorders the convolutions into its
blocked NCHWc layout, which is where its speed over the frameworks comes from), one
intra-op thread per available CPU, no inter-op parallelism (the graph is a chain), the
memory arena and memory patterns on (one batch shape is run many times).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from ptycho_core.config import ModelConfig
from ptycho_core.errors import ConfigError

__all__ = [
    "GRAPH_ERRORS",
    "available_cpus",
    "graph_signature_problem",
    "make_session",
    "providers_for",
]

GPU_PROVIDERS = ("CUDAExecutionProvider",)
"""Execution providers tried for ``accelerator`` 'gpu' and 'auto', in order of preference."""
CPU_PROVIDER = "CPUExecutionProvider"
GRAPH_ERRORS: tuple[type[Exception], ...] = (
    _state.Fail,
    _state.InvalidArgument,
    _state.InvalidGraph,
    _state.InvalidProtobuf,
    _state.NoSuchFile,
    _state.NotImplemented,
)
"""What ONNX Runtime raises for a graph it cannot load: the file's fault, not a bug."""


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def providers_for(accelerator: str, backend: str = "onnx") -> list[str]:
    """Execution providers for ``accelerator``: 'cpu' the CPU, 'gpu' an installed GPU
    provider (an error without one), 'auto' a GPU provider when installed, else the CPU."""
    installed = ort.get_available_providers()
    gpus = [name for name in GPU_PROVIDERS if name in installed]
    if accelerator == "cpu":
        return [CPU_PROVIDER]
    if accelerator == "gpu" and not gpus:
        raise ConfigError(
            f"InferenceConfig.accelerator: the {backend} backend found no GPU execution "
            f"provider in this ONNX Runtime (expected one of {', '.join(GPU_PROVIDERS)}, "
            f"found {', '.join(installed)}); install onnxruntime-gpu or use 'cpu'"
        )
    return [*gpus, CPU_PROVIDER]


def make_session(graph: bytes, *, providers: Sequence[str], threads: int) -> ort.InferenceSession:
    """A session running ``graph`` (serialised ONNX) on ``providers`` (see
    :func:`providers_for`) with ``threads`` intra-op threads (0: one per available CPU).

    The graph is given as bytes, so a graph that refers to external data files cannot
    reach the file system, and no custom-operator library is registered: loading runs
    nothing but ONNX Runtime's own operators.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or available_cpus()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = True
    options.enable_mem_pattern = True
    options.log_severity_level = 3  # errors only: warnings would go to stderr unasked
    return ort.InferenceSession(graph, options, providers=list(providers))


def _describe(type_: str, shape: Sequence[Any]) -> str:
    dims = ", ".join("batch" if not isinstance(d, int) else str(d) for d in shape)
    return f"{type_} ({dims})"


def graph_signature_problem(
    session: ort.InferenceSession,
    model: ModelConfig,
    input_name: str,
    output_names: Sequence[str],
) -> str | None:
    """What is wrong with the graph's inputs and outputs for a model of ``model`` (None: fine).

    Expected: one input ``input_name`` float32 (batch, N, N, C) and the outputs
    ``output_names``, each float32 (batch, N, N, H) with H = C (``object_big``) or 1.
    """
    N, C = model.N, model.channels
    heads = C if model.object_big else 1
    wanted = [(input_name, [N, N, C])]
    found = [(item.name, item.type, list(item.shape)) for item in session.get_inputs()]
    if [name for name, _, _ in found] != [input_name]:
        return f"graph inputs: expected [{input_name!r}], found {[name for name, _, _ in found]}"
    outputs = [(item.name, item.type, list(item.shape)) for item in session.get_outputs()]
    if [name for name, _, _ in outputs] != list(output_names):
        return (
            f"graph outputs: expected {list(output_names)}, found "
            f"{[name for name, _, _ in outputs]}"
        )
    wanted += [(name, [N, N, heads]) for name in output_names]
    for (name, shape), (_, type_, dims) in zip(wanted, found + outputs, strict=True):
        batch_free = len(dims) == 4 and not isinstance(dims[0], int)
        if type_ != "tensor(float)" or not batch_free or dims[1:] != shape:
            expected = _describe("tensor(float)", ["batch", *shape])
            return f"graph tensor {name!r}: expected {expected}, found {_describe(type_, dims)}"
    return None

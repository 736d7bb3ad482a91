"""Static int8 quantisation of an exported generator, calibrated on simulated data.

ONNX Runtime's quantiser inserts QuantizeLinear / DequantizeLinear pairs (the QDQ format)
around every convolution: weights as int8 per output channel, activations as uint8 with
ranges taken from the activations the float graph produces on calibration data. On a CPU
with AVX-512 VNNI the runtime then runs the convolutions as integer products.

The calibration data is the embedded simulated training scan (``default_dataset('train')``)
at the model's N, dose and gridsize, grouped and normalised exactly as inference does; the
held-out test object is never used, so the quality measured on it is not flattered.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core.config import TrainingConfig
from ptycho_core.grouping import make_groups
from ptycho_core.simulate import default_dataset
from ptycho_onnx.graph import INPUT, import_onnx

__all__ = ["CALIBRATION_BATCH", "calibration_inputs", "quantize_int8"]

CALIBRATION_BATCH = 32
"""Groups per calibration batch (the calibrator's memory grows with the batch, not the count)."""


def calibration_inputs(config: TrainingConfig, n_groups: int) -> np.ndarray:
    """``n_groups`` normalised groups (n, N, N, C) of the simulated training scan."""
    model = config.model
    data = default_dataset("train", N=model.N, nphotons=config.nphotons)
    groups = make_groups(
        data,
        model.gridsize,
        n_groups=min(n_groups, data.n_positions),
        neighbor_count=max(config.neighbor_count, model.channels),
        seed=config.seed,
    )
    return np.ascontiguousarray(groups.diffraction, dtype=np.float32)


class _Batches:
    """The calibration reader ONNX Runtime's quantiser pulls input batches from."""

    def __init__(self, inputs: np.ndarray) -> None:
        self._batches = iter(
            [
                {INPUT: inputs[i : i + CALIBRATION_BATCH]}
                for i in range(0, len(inputs), CALIBRATION_BATCH)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The quantiser logs advice through the root logger; keep it off the user's stderr."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_int8(model: Any, inputs: np.ndarray) -> Any:
    """The float ``onnx.ModelProto`` ``model`` quantised to int8 (QDQ), calibrated on
    ``inputs`` (n, N, N, C) float32; returns the new ``onnx.ModelProto``."""
    onnx = import_onnx()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(prefix="ptycho-onnx-") as folder, _quiet_root_logger():
        source, prepared, target = (Path(folder) / name for name in ("f.onnx", "p.onnx", "q.onnx"))
        onnx.save(model, source)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Batches(inputs),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        quantized = onnx.load(target)
    onnx.checker.check_model(quantized, full_check=True)
    return quantized

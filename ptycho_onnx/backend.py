"""``OnnxBackend``: an exported generator on ONNX Runtime, inference only.

A model of this backend is made by exporting a trained network
(``ptycho export BUNDLE --format onnx``, :func:`ptycho_core.convert.export_bundle`), which
hands the network's framework-neutral weights to :meth:`OnnxBackend.import_arrays`: the
generator is written as an ONNX graph (:mod:`ptycho_onnx.graph`), optionally quantised to
int8 (:mod:`ptycho_onnx.quantize`), and the physics metadata (probe, intensity scale,
output gain, architecture) travels in the bundle's manifest as for every backend.
Inference runs the graph and finishes the object in numpy
(:func:`ptycho_core.object_patches.object_patches`), so stitching, evaluation and every
workflow see the same patches as from the source backend.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from ptycho_core.architecture import neutral_shapes
from ptycho_core.backend_options import (
    BackendOption,
    int_in,
    one_of,
    resolve_backend_options,
)
from ptycho_core.bundle import read_bundle, read_payload_json, write_bundle
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.convert import checked_import, checked_intensity_scale
from ptycho_core.errors import BundleError, CapabilityError, ConfigError
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import HookRelay
from ptycho_core.object_patches import object_patches
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_onnx.graph import INPUT, OPSET, OUTPUTS
from ptycho_onnx.runtime import (
    GRAPH_ERRORS,
    graph_signature_problem,
    make_session,
    providers_for,
)

__all__ = ["GRAPH_FILE", "METADATA_FILE", "ExportedGenerator", "OnnxBackend"]

GRAPH_FILE = "generator.onnx"
METADATA_FILE = "onnx.json"
PAYLOAD_VERSION = 1
QUANTIZATIONS = ("none", "int8")
MAX_CALIBRATION_GROUPS = 4096
_METADATA_MAX_BYTES = 4096
_METADATA_KEYS = ("calibration_groups", "opset", "quantization", "version")


@dataclass(eq=False)
class ExportedGenerator:
    """The payload of an ``onnx`` model: the serialised graph and how it was made.

    Sessions are made on first use and kept, one per (execution providers, threads): the
    CPU session that loading checks the graph with serves inference on a machine without a
    GPU provider too.
    """

    graph: bytes
    quantization: str
    calibration_groups: int
    opset: int = OPSET
    _sessions: dict[tuple[tuple[str, ...], int], ort.InferenceSession] = field(
        default_factory=dict, repr=False
    )

    def session(self, accelerator: str, threads: int) -> ort.InferenceSession:
        key = (tuple(providers_for(accelerator)), threads)
        if key not in self._sessions:
            self._sessions[key] = make_session(self.graph, providers=key[0], threads=threads)
        return self._sessions[key]

    def metadata(self) -> dict[str, Any]:
        return {
            "version": PAYLOAD_VERSION,
            "opset": self.opset,
            "quantization": self.quantization,
            "calibration_groups": self.calibration_groups,
        }


class OnnxBackend:
    """Exported PtychoPINN generators on ONNX Runtime (CPU, or a GPU execution provider)."""

    name: ClassVar[str] = "onnx"
    capabilities: ClassVar[Mapping[str, bool]] = {"trains": False}
    training_options: ClassVar[tuple[BackendOption, ...]] = (
        BackendOption(
            "quantize",
            "applied at export: 'int8' quantises the graph statically, 'none' keeps float32",
            one_of(QUANTIZATIONS),
            default="none",
        ),
        BackendOption(
            "calibration_groups",
            "applied at export with quantize=int8: simulated training groups that calibrate it",
            int_in(8, MAX_CALIBRATION_GROUPS),
            default=256,
        ),
    )
    inference_options: ClassVar[tuple[BackendOption, ...]] = (
        BackendOption(
            "threads",
            "intra-op threads of ONNX Runtime; 0: one per CPU this process may use",
            int_in(0, 1024),
            default=0,
        ),
    )

    # -- protocol ---------------------------------------------------------------------------

    def train(
        self, data: TrainingData, config: TrainingConfig, *, hooks: HookRelay
    ) -> TrainedModel:
        """Refused: this backend runs networks trained elsewhere."""
        raise CapabilityError(
            "backend 'onnx' runs exported networks and does not train: train with "
            "'pytorch' or 'tensorflow', then export the bundle with "
            "`ptycho export BUNDLE --format onnx --output MODEL.ptycho`"
        )

    def infer(
        self, model: TrainedModel, data: GroupedData, config: InferenceConfig, *, hooks: HookRelay
    ) -> np.ndarray:
        """Object patches at the group centres, complex64 (B, N, N, 1), in batches."""
        session = self._session(model, config)
        model.check_groups(data)
        total = data.n_groups
        result = np.empty((total, model.N, model.N, 1), dtype=np.complex64)
        for start in range(0, total, config.batch_size):
            stop = min(start + config.batch_size, total)
            result[start:stop] = self._run(
                session, model, data.diffraction[start:stop], data.coords_relative[start:stop]
            )
            hooks.ptycho_infer_progress(done=stop, total=total)
        return result

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        """Write a bundle atomically: payload ``generator.onnx`` and ``onnx.json``."""
        generator = model.payload(self.name, ExportedGenerator)

        def write_payload(folder: Path) -> None:
            (folder / GRAPH_FILE).write_bytes(generator.graph)
            (folder / METADATA_FILE).write_text(json.dumps(generator.metadata(), sort_keys=True))

        write_bundle(path, model, write_payload, framework={"onnxruntime": ort.__version__})

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        """Read an ``onnx`` bundle; the graph's inputs and outputs are checked against the
        manifest's architecture in a CPU session before anything runs on data."""
        with read_bundle(path, expected_backend=self.name) as contents:
            folder = contents.payload_dir
            generator = _read_payload(Path(path), folder)
            try:
                session = generator.session("cpu", 0)
            except GRAPH_ERRORS as error:
                raise BundleError(
                    f"bundle {path}: payload {GRAPH_FILE}: ONNX Runtime cannot load it ({error})"
                ) from error
            problem = graph_signature_problem(session, contents.config.model, INPUT, OUTPUTS)
            if problem is not None:
                raise BundleError(f"bundle {path}: payload {GRAPH_FILE}: {problem}")
            return contents.trained_model(generator)

    # -- extras -----------------------------------------------------------------------------

    def forward(
        self,
        model: TrainedModel,
        diffraction: np.ndarray,
        coords_relative: np.ndarray,
        *,
        precision: str = "32",
        accelerator: str = "auto",
    ) -> np.ndarray:
        """The bare graph and object formation on one batch: (B, N, N, 1) complex64."""
        config = InferenceConfig(backend=self.name, precision=precision, accelerator=accelerator)
        session = self._session(model, config)
        return self._run(session, model, diffraction, coords_relative)

    def import_arrays(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        config: TrainingConfig,
        probe: np.ndarray,
        intensity_scale: float,
        history: Mapping[str, Sequence[float]] | None = None,
    ) -> TrainedModel:
        """Export: a model of this backend whose graph holds the neutral ``arrays``.

        ``config.backend_options`` are the export settings (``quantize``,
        ``calibration_groups``); the architecture is ``config.model``. Raises
        ``ValueError`` naming the array for a missing, unexpected, misshapen or non-finite
        one, as the framework backends do.
        """
        from ptycho_onnx.graph import build_generator

        intensity_scale = checked_intensity_scale(intensity_scale)
        options = resolve_backend_options(
            self.name,
            config.backend_options,
            self.training_options,
            field="TrainingConfig.backend_options",
        )
        config = config if config.backend == self.name else config.replace(backend=self.name)
        expected = neutral_shapes(config.model, probe_trainable=config.probe_trainable)
        checked = checked_import(arrays, expected)
        graph = build_generator(checked, config.model)
        calibration = 0
        if options["quantize"] == "int8":
            from ptycho_onnx.quantize import calibration_inputs, quantize_int8

            calibration = options["calibration_groups"]
            graph = quantize_int8(graph, calibration_inputs(config, calibration))
        if config.probe_trainable:
            probe = checked["probe.real"] + 1j * checked["probe.imag"]
        trained = [name for name in checked if not name.startswith("probe.")]
        if not config.intensity_scale_trainable:
            trained.remove("log_gain")
        generator = ExportedGenerator(
            graph=graph.SerializeToString(),
            quantization=options["quantize"],
            calibration_groups=calibration,
        )
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=np.asarray(probe, dtype=np.complex64),
            intensity_scale=intensity_scale,
            network=generator,
            history={name: list(values) for name, values in (history or {}).items()},
            extra={
                "output_gain": math.exp(float(checked["log_gain"])),
                "parameters": int(sum(checked[name].size for name in trained)),
                "quantization": options["quantize"],
            },
        )

    # -- helpers ----------------------------------------------------------------------------

    def _session(self, model: TrainedModel, config: InferenceConfig) -> ort.InferenceSession:
        """The checked settings' session for ``model`` (refusing what this backend cannot do)."""
        generator = model.payload(self.name, ExportedGenerator)
        config.require_single_device(self.name)
        config.require_no_iterations(self.name)
        options = resolve_backend_options(
            self.name,
            config.backend_options,
            self.inference_options,
            field="InferenceConfig.backend_options",
        )
        if config.precision != "32":
            raise ConfigError(
                f"InferenceConfig.precision: the {self.name} backend runs a graph at the "
                f"precision it was exported with ({generator.quantization!r} quantisation); "
                f"expected '32', found {config.precision!r} (export with "
                "`--option quantize=int8` for an integer graph)"
            )
        return generator.session(config.accelerator, options["threads"])

    @staticmethod
    def _run(
        session: ort.InferenceSession,
        model: TrainedModel,
        diffraction: np.ndarray,
        coords_relative: np.ndarray,
    ) -> np.ndarray:
        feed = {INPUT: np.ascontiguousarray(diffraction, dtype=np.float32)}
        amplitude, phase = session.run(list(OUTPUTS), feed)
        return object_patches(amplitude, phase, coords_relative, model.config.model)


def _read_payload(bundle: Path, folder: Path) -> ExportedGenerator:
    """The payload's graph bytes and checked metadata (JSON only; nothing is unpickled)."""

    def fail(file: str, message: str) -> BundleError:
        return BundleError(f"bundle {bundle}: payload {file}: {message}")

    for name in (GRAPH_FILE, METADATA_FILE):
        if not (folder / name).is_file():
            raise fail(name, "is missing")
    document = read_payload_json(
        folder / METADATA_FILE, _METADATA_MAX_BYTES, lambda message: fail(METADATA_FILE, message)
    )
    if not isinstance(document, dict) or sorted(document) != sorted(_METADATA_KEYS):
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise fail(
            METADATA_FILE, f"expected an object with keys {list(_METADATA_KEYS)}, found {found}"
        )

    def integer(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    checks = {
        "version": lambda v: integer(v) and v == PAYLOAD_VERSION,
        "opset": lambda v: integer(v) and v == OPSET,
        "quantization": lambda v: isinstance(v, str) and v in QUANTIZATIONS,
        "calibration_groups": lambda v: integer(v) and 0 <= v <= MAX_CALIBRATION_GROUPS,
    }
    expected = {
        "version": str(PAYLOAD_VERSION),
        "opset": str(OPSET),
        "quantization": f"one of {', '.join(QUANTIZATIONS)}",
        "calibration_groups": f"an integer in [0, {MAX_CALIBRATION_GROUPS}]",
    }
    for key, check in checks.items():
        if not check(document[key]):
            raise fail(
                METADATA_FILE, f"key {key!r}: expected {expected[key]}, found {document[key]!r}"
            )
    return ExportedGenerator(
        graph=(folder / GRAPH_FILE).read_bytes(),
        quantization=document["quantization"],
        calibration_groups=document["calibration_groups"],
        opset=document["opset"],
    )

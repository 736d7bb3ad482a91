"""The ``onnx`` backend on its own: export from neutral weights, the graph, the session,
the bundle, and everything it refuses. Framework-free: these tests import neither torch
nor tensorflow (the graph's weights come from ``initial_arrays``)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptycho_core.architecture import initial_arrays, neutral_shapes
from ptycho_core.config import ModelConfig, TrainingConfig
from ptycho_core.errors import BundleError, CapabilityError, ConfigError
from ptycho_core.hooks import make_plugin_manager
from ptycho_core.physics import default_probe
from ptycho_core.testing import BackendHarness, HookRecorder, parametrize_with_checks
from ptycho_core.workflows import get_backend

pytest.importorskip("onnx")  # exporting (building graphs) needs it; running does not

from ptycho_onnx.backend import GRAPH_FILE, METADATA_FILE, ExportedGenerator, OnnxBackend
from ptycho_onnx.graph import INPUT, OUTPUTS, build_generator
from ptycho_onnx.runtime import graph_signature_problem, make_session, providers_for

HOOKS = make_plugin_manager(load_entry_points=False).hook
SCALE = 1000.0


def exported(model: ModelConfig | None = None, **options: object):
    """A model of backend ``onnx`` holding a new network's weights (no framework)."""
    model = model or ModelConfig()
    config = TrainingConfig(model=model, backend="onnx", backend_options=options)
    probe = default_probe(model.N).astype(np.complex64)
    arrays = initial_arrays(model, probe, SCALE, seed=1)
    return OnnxBackend().import_arrays(arrays, config=config, probe=probe, intensity_scale=SCALE)


@pytest.fixture(scope="module")
def model():
    return exported()


def batch(model_config: ModelConfig, size: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    C = model_config.channels
    x = rng.random((size, model_config.N, model_config.N, C), dtype=np.float32)
    coords = rng.normal(0, 2, (size, 1, 2, C)).astype(np.float32)
    return x, coords


@parametrize_with_checks(["onnx"])
def test_onnx_conformance(backend: BackendHarness, check) -> None:
    check(backend)


architectures = st.builds(
    ModelConfig,
    gridsize=st.sampled_from([1, 2]),
    object_big=st.booleans(),
    probe_big=st.booleans(),
    pad_object=st.booleans(),
    amp_activation=st.sampled_from(["sigmoid", "swish", "softplus", "relu"]),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures)
def test_every_architecture_exports_to_a_graph_of_the_declared_signature(config) -> None:
    probe = default_probe(config.N)
    graph = build_generator(initial_arrays(config, probe, SCALE), config)
    session = make_session(graph.SerializeToString(), providers=providers_for("cpu"), threads=1)
    assert graph_signature_problem(session, config, INPUT, OUTPUTS) is None
    x, _ = batch(config, size=3)
    amplitude, phase = session.run(list(OUTPUTS), {INPUT: x})
    heads = config.channels if config.object_big else 1
    assert amplitude.shape == phase.shape == (3, config.N, config.N, heads)
    assert np.all(np.isfinite(amplitude)) and np.all(np.abs(phase) <= np.pi)
    # the graph holds every neutral array except the gain, which is physics, not generator
    stored = {init.name for init in graph.graph.initializer}
    kernels = {
        name[: -len(".kernel")] for name in neutral_shapes(config) if name.endswith(".kernel")
    }
    assert {f"{prefix}.weight" for prefix in kernels} <= stored
    # a graph of another architecture is named as the wrong one
    other = config.replace(gridsize=3 - config.gridsize)
    assert graph_signature_problem(session, other, INPUT, OUTPUTS) is not None


def test_a_model_infers_object_patches_in_batches_with_progress(model) -> None:
    from ptycho_core.testing import data

    groups = data.inference_groups(data.simulated_dataset(64), 1)
    recorder = HookRecorder()
    config = data.inference_config("onnx", batch_size=10)
    patches = OnnxBackend().infer(model, groups, config, hooks=recorder.relay())
    assert patches.shape == (groups.n_groups, 64, 64, 1) and patches.dtype == np.complex64
    done = [call["done"] for call in recorder.named("infer_progress")]
    assert done == [*range(10, groups.n_groups, 10), groups.n_groups]
    forward = OnnxBackend().forward(model, groups.diffraction[:10], groups.coords_relative[:10])
    np.testing.assert_array_equal(forward, patches[:10])


def test_training_is_refused_and_names_the_export_path(model) -> None:
    with pytest.raises(CapabilityError, match=r"ptycho export BUNDLE --format onnx"):
        OnnxBackend().train(None, TrainingConfig(backend="onnx"), hooks=HOOKS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "bf16-mixed"}, r"precision.*'32'.*quantize=int8"),
        ({"iterations": 3}, r"iterations"),
        ({"devices": 2}, r"devices"),
        ({"backend_options": {"threads": -1}}, r"threads"),
        ({"backend_options": {"quantize": "int8"}}, r"no option 'quantize'"),
    ],
)
def test_inference_settings_it_cannot_honour_are_refused(model, changes, message) -> None:
    from ptycho_core.config import InferenceConfig

    x, coords = batch(model.config.model)
    config = InferenceConfig(backend="onnx", **changes)
    with pytest.raises(ConfigError, match=message):
        OnnxBackend()._session(model, config)
    if "precision" in changes:
        with pytest.raises(ConfigError, match=message):
            OnnxBackend().forward(model, x, coords, precision="bf16-mixed")


def test_a_gpu_without_a_gpu_provider_is_an_error_not_a_fallback(model) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.fail("this test needs an ONNX Runtime without the CUDA provider (the CPU wheel)")
    x, coords = batch(model.config.model)
    with pytest.raises(ConfigError, match=r"no GPU execution provider.*onnxruntime-gpu"):
        OnnxBackend().forward(model, x, coords, accelerator="gpu")


def test_export_refuses_arrays_that_do_not_fit_the_architecture() -> None:
    config = TrainingConfig(backend="onnx")
    probe = default_probe(64).astype(np.complex64)
    arrays = initial_arrays(config.model, probe, SCALE)
    backend = OnnxBackend()
    missing = {k: v for k, v in arrays.items() if k != "decoder_phase.head.kernel"}
    with pytest.raises(ValueError, match=r"'decoder_phase.head.kernel' is missing"):
        backend.import_arrays(missing, config=config, probe=probe, intensity_scale=SCALE)
    bad = {**arrays, "encoder.blocks.0.conv0.bias": np.zeros(3, np.float32)}
    with pytest.raises(ValueError, match=r"encoder.blocks.0.conv0.bias.*expected shape \(32,\)"):
        backend.import_arrays(bad, config=config, probe=probe, intensity_scale=SCALE)
    nan = {**arrays, "log_gain": np.array(np.nan, np.float32)}
    with pytest.raises(ValueError, match=r"'log_gain' holds NaN"):
        backend.import_arrays(nan, config=config, probe=probe, intensity_scale=SCALE)
    with pytest.raises(ConfigError, match=r"quantize"):
        exported(quantize="int4")


def test_save_and_load_keep_the_graph_and_the_physics(model, tmp_path: Path) -> None:
    backend = OnnxBackend()
    path = tmp_path / "m.ptycho"
    backend.save(model, path)
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        metadata = json.loads(archive.read(f"payload/{METADATA_FILE}"))
    assert manifest["backend"] == "onnx" and set(manifest["payload"]) == {GRAPH_FILE, METADATA_FILE}
    assert manifest["framework"] == {"onnxruntime": __import__("onnxruntime").__version__}
    assert metadata == {"version": 1, "opset": 17, "quantization": "none", "calibration_groups": 0}
    loaded = backend.load(path)
    assert loaded.network.graph == model.network.graph
    assert loaded.intensity_scale == model.intensity_scale
    assert loaded.extra["output_gain"] == pytest.approx(model.extra["output_gain"])
    np.testing.assert_array_equal(loaded.probe, model.probe)
    x, coords = batch(model.config.model)
    np.testing.assert_array_equal(
        backend.forward(loaded, x, coords), backend.forward(model, x, coords)
    )


def _with_payload(model, path: Path, graph: bytes | None = None, metadata: object = None) -> Path:
    """``model`` saved with its payload replaced (the manifest's checksums fit the new files)."""
    network = model.network
    if graph is not None:
        network = dataclasses.replace(network, graph=graph, _sessions={})
    if metadata is not None:
        network = _FakeMetadata(network, metadata)
    OnnxBackend().save(dataclasses.replace(model, network=network), path)
    return path


class _FakeMetadata(ExportedGenerator):
    def __init__(self, real: ExportedGenerator, metadata: object) -> None:
        super().__init__(real.graph, real.quantization, real.calibration_groups)
        self._fake = metadata

    def metadata(self):  # type: ignore[override]
        return self._fake


def _custom_op_graph() -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Exec", [INPUT], ["amplitude"], domain="evil.ops")
    graph = helper.make_graph(
        [node, helper.make_node("Identity", ["amplitude"], ["phase"])],
        "hostile",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["b", 64, 64, 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 64, 64, 1]) for n in OUTPUTS],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("evil.ops", 1)]
    )
    return model.SerializeToString()


def _external_data_graph(target: Path) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1])
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=str(target))
    add = helper.make_node("Add", [INPUT, "w"], ["amplitude"])
    graph = helper.make_graph(
        [add, helper.make_node("Identity", ["amplitude"], ["phase"])],
        "external",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["b", 64, 64, 1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["b", 64, 64, 1]) for n in OUTPUTS],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_hostile_or_inconsistent_payloads_are_refused_naming_the_file(
    model, tmp_path: Path
) -> None:
    load = OnnxBackend().load
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.float32(7).tobytes())
    wrong_architecture = exported(ModelConfig(gridsize=2)).network.graph
    cases = [
        (dict(graph=b"not a graph"), rf"payload {GRAPH_FILE}: ONNX Runtime cannot load it"),
        (dict(graph=_custom_op_graph()), rf"payload {GRAPH_FILE}: ONNX Runtime cannot load it"),
        (dict(graph=_external_data_graph(secret)), rf"payload {GRAPH_FILE}: ONNX Runtime cannot"),
        (
            dict(graph=wrong_architecture),
            r"graph tensor 'diffraction': expected tensor\(float\) \(batch, 64, 64, 1\), found tensor\(float\) \(batch, 64, 64, 4\)",
        ),
        (dict(metadata=[1, 2]), rf"payload {METADATA_FILE}: expected an object with keys"),
        (
            dict(
                metadata={
                    "version": True,
                    "opset": 17,
                    "quantization": "none",
                    "calibration_groups": 0,
                }
            ),
            r"key 'version': expected 1, found True",
        ),
        (
            dict(
                metadata={
                    "version": 1,
                    "opset": 99,
                    "quantization": "none",
                    "calibration_groups": 0,
                }
            ),
            r"key 'opset': expected 17, found 99",
        ),
        (
            dict(
                metadata={"version": 1, "opset": 17, "quantization": "fp4", "calibration_groups": 0}
            ),
            r"key 'quantization'",
        ),
        (
            dict(
                metadata={
                    "version": 1,
                    "opset": 17,
                    "quantization": "none",
                    "calibration_groups": 10**9,
                }
            ),
            r"key 'calibration_groups'",
        ),
        (dict(metadata={"pad": "x" * 5000}), rf"payload {METADATA_FILE}: larger than 4096 bytes"),
    ]
    for index, (change, message) in enumerate(cases):
        path = _with_payload(model, tmp_path / f"bad{index}.ptycho", **change)
        with pytest.raises(BundleError, match=message) as raised:
            load(path)
        assert str(path) in str(raised.value)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_loading_and_inferring_import_no_framework_and_not_onnx(
    tmp_path: Path, quantize: str
) -> None:
    """The deployment path needs ONNX Runtime only: run in a fresh interpreter, it imports
    neither framework nor the ``onnx`` package, whatever else is installed."""
    path = tmp_path / "m.ptycho"
    OnnxBackend().save(exported(quantize=quantize, calibration_groups=16), path)
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from ptycho_core.workflows import get_backend\n"
        f"backend = get_backend('onnx'); model = backend.load({str(path)!r})\n"
        "x = np.ones((2, 64, 64, 1), np.float32); c = np.zeros((2, 1, 2, 1), np.float32)\n"
        "assert np.all(np.isfinite(backend.forward(model, x, c)))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'lightning', 'tensorflow', 'keras', 'onnx'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_int8_export_is_quantised_and_stays_close_to_float32() -> None:
    float_model = exported()
    int8_model = exported(quantize="int8", calibration_groups=32)
    assert (
        int8_model.extra["quantization"] == "int8" and int8_model.network.calibration_groups == 32
    )
    ops = {
        node.op_type
        for node in __import__("onnx").load_from_string(int8_model.network.graph).graph.node
    }
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    from ptycho_core.testing import data

    groups = data.inference_groups(data.simulated_dataset(64), 1)
    x, coords = groups.diffraction[:16], groups.coords_relative[:16]
    # the object lives in the central N/2 box (the field around it is free and, in a new
    # network, about zero: quantisation noise dominates it, and stitching never uses it)
    box = np.s_[:, 16:48, 16:48]
    reference = OnnxBackend().forward(float_model, x, coords)[box]
    quantised = OnnxBackend().forward(int8_model, x, coords)[box]
    error = np.abs(quantised - reference).max() / np.abs(reference).max()
    assert 0 < error < 0.05


def test_the_selector_finds_it_by_name() -> None:
    backend = get_backend("onnx")
    assert backend.name == "onnx" and isinstance(backend, OnnxBackend)


def test_the_comparison_script_measures_it_through_exports() -> None:
    """scripts/compare.py classifies it as a deployment backend: never trained, run on the
    exports of the network backends' trained bundles."""
    from script_helpers import import_script

    kind = import_script("compare").classify_backend(OnnxBackend())
    assert kind["kind"] == "deployment" and kind["capabilities"]["trains"] is False

"""The conformance kit (ptycho_core.testing) passes a good backend and catches broken ones.

The good backend is the installed test backend 'numpy-gain'. Every rule of the kit is
then broken on purpose by a small subclass of it that changes exactly one behaviour;
the kit must fail exactly that rule's check, with a message naming the rule, what was
expected and what was found. Nothing is mocked: the broken backends really train,
infer, save and load.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import run_cli

from ptycho_core.backend_options import resolve_backend_options
from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.errors import BundleError
from ptycho_core.protocol import TrainedModel
from ptycho_core.testing import (
    CHECKS,
    KNOWN_CAPABILITIES,
    BackendHarness,
    CheckSkipped,
    ConformanceError,
    ConformanceReport,
    backend_checks,
    check_backend,
    parametrize_with_checks,
)

try:
    from ptycho_testbackends.echo import ObjectEchoBackend
    from ptycho_testbackends.gain import WEIGHTS_FILE, NumpyGainBackend, constant_patches
except ImportError:  # the ptycho_test_distributions fixture fails every test with the fix
    NumpyGainBackend = ObjectEchoBackend = object  # type: ignore[assignment,misc]
    WEIGHTS_FILE = "weights.npz"
    constant_patches = None  # type: ignore[assignment]

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")

RULES = {check.__name__: check.rule for check in CHECKS}  # type: ignore[attr-defined]


# ----------------------------------------------------------------------- the good backend


@parametrize_with_checks(["numpy-gain"])
def test_numpy_gain_passes_every_check(backend: BackendHarness, check: Callable) -> None:
    check(backend)


def test_check_backend_report_for_numpy_gain(tmp_path: Path) -> None:
    report = check_backend("numpy-gain", tmp_dir=tmp_path)
    assert isinstance(report, ConformanceReport)
    assert report.passed, str(report)
    assert [r.check for r in report.results] == [c.__name__ for c in CHECKS]
    # numpy-gain has 'forward' and 'train_from', but no initial-object capability
    assert [r.check for r in report.skipped] == [
        "check_infer_from",
        "check_infer_from_rejects_foreign_model",
    ]
    report.raise_if_failed()  # nothing to raise
    assert (tmp_path / "model.ptycho").is_file()  # a given tmp_dir is kept
    text = str(report)
    assert "24 passed, 0 failed, 2 skipped" in text
    assert json.loads(json.dumps(report.to_dict()))["passed"] is True


def test_object_echo_passes_every_check_including_both_capabilities() -> None:
    report = check_backend("object-echo")
    assert report.passed, str(report)
    assert {r.status for r in report.results} == {"passed"}


def test_numpy_gain_passes_at_gridsize_2() -> None:
    report = check_backend("numpy-gain", gridsize=2)
    assert report.passed, str(report)


def test_parametrize_ids_are_readable_and_selectable() -> None:
    mark = parametrize_with_checks(["numpy-gain", Gain], checks=["infer-output", "check_protocol"])
    ids = [param.id for param in mark.args[1]]
    assert ids == [
        "numpy-gain-check_infer_output",
        "numpy-gain-check_protocol",
        "gain-subclass-check_infer_output",
        "gain-subclass-check_protocol",
    ]
    pairs = list(backend_checks("numpy-gain"))
    assert len(pairs) == len(CHECKS)
    assert len({id(harness) for harness, _ in pairs}) == 1  # one shared harness per backend


def test_unknown_check_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown check 'infer-outptu'.*check_infer_output"):
        check_backend("numpy-gain", checks=["infer-outptu"])


def test_the_minimal_example_of_the_protocol_spec_passes_the_kit() -> None:
    """specs/backend-protocol.md §6 is what authors copy: it must honour every rule."""
    spec = Path(__file__).resolve().parents[1] / "specs" / "backend-protocol.md"
    blocks = re.findall(r"```python\n(.*?)```", spec.read_text(encoding="utf-8"), re.S)
    (code,) = [b for b in blocks if b.startswith("# ptycho_constant/backend.py")]
    namespace: dict[str, Any] = {"__name__": "ptycho_constant_backend"}
    exec(compile(code, f"{spec} (§6 example)", "exec"), namespace)
    report = check_backend(namespace["ConstantBackend"])
    assert report.passed, str(report)
    assert {r.check for r in report.results if r.status == "passed"} >= {
        "check_save_load_round_trip",
        "check_epoch_end_hook",
        "check_infer_rejects_wrong_gridsize",
    }


def test_harness_rejects_unsupported_sizes() -> None:
    with pytest.raises(ValueError, match="N expected one of"):
        BackendHarness("numpy-gain", N=48)
    with pytest.raises(ValueError, match="gridsize expected"):
        BackendHarness("numpy-gain", gridsize=0)


# ----------------------------------------------------------------------- broken backends


class Gain(NumpyGainBackend):
    """numpy-gain under another name (not registered): the base of the broken ones."""

    name = "gain-subclass"


class _Hooks:
    """A hook relay that rewrites (or drops, when ``change`` returns None) one hook's calls."""

    def __init__(self, hooks: Any, hook: str, change: Callable[[dict], dict | None]) -> None:
        self._hooks, self._hook, self._change = hooks, hook, change

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._hooks, name)
        if name != self._hook:
            return real

        def call(**kwargs: Any) -> Any:
            changed = self._change(kwargs)
            return None if changed is None else real(**changed)

        return call


class BadDescription(Gain):
    name = "broken-description"
    description = 42  # type: ignore[assignment]  # the reserved extra must be a str


class MisspelledCapability(Gain):
    name = "broken-capability"
    capabilities = {"determinstic": False}  # noqa: RUF012


class StartCountsAllGroups(Gain):
    name = "broken-start"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        relay = _Hooks(hooks, "ptycho_train_start", lambda kw: {**kw, "n_groups": data.n_groups})
        return super().train(data, config, hooks=relay)


class NumpyFloatLosses(Gain):
    name = "broken-epoch-end"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        def to_numpy(kw: dict) -> dict:
            return {**kw, "losses": {k: np.float32(v) for k, v in kw["losses"].items()}}

        return super().train(data, config, hooks=_Hooks(hooks, "ptycho_epoch_end", to_numpy))


class EpochsFromOne(Gain):
    name = "broken-epoch-count"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        relay = _Hooks(hooks, "ptycho_epoch_end", lambda kw: {**kw, "epoch": kw["epoch"] + 1})
        return super().train(data, config, hooks=relay)


class TruncatedEndHistory(Gain):
    name = "broken-train-end"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        def drop_last(kw: dict) -> dict:
            return {"history": {k: list(v)[:-1] for k, v in kw["history"].items()}}

        return super().train(data, config, hooks=_Hooks(hooks, "ptycho_train_end", drop_last))


class RecomputedScale(Gain):
    name = "broken-trained-model"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        model = super().train(data, config, hooks=hooks)
        return dataclasses.replace(model, intensity_scale=2 * model.intensity_scale)


class AdaptsMismatchedConfig(Gain):
    """Silently replaces the architecture by the data's instead of refusing."""

    name = "broken-train-mismatch"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        model = config.model.replace(N=data.N, gridsize=data.groups.gridsize)
        return super().train(data, config.replace(model=model), hooks=hooks)


class UnseededTraining(Gain):
    name = "broken-determinism"
    runs = itertools.count(1)  # each training differs from the last, as unseeded state would

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        model = super().train(data, config, hooks=hooks)
        jitter = 1.0 + 0.01 * next(self.runs)
        return dataclasses.replace(model, network=np.asarray(model.network * jitter))


class IgnoresTrainingOptions(Gain):
    """Trains with whatever backend_options it is given, reading none of them."""

    name = "broken-train-options"

    def _training_options(self, config: Any) -> dict[str, Any]:
        return {"newton_fraction": 0.5}


class IgnoresInferenceOptions(Gain):
    name = "broken-infer-options"

    def _inference_options(self, config: Any) -> dict[str, Any]:
        return {}


class MisdeclaredOptions(Gain):
    name = "broken-option-declaration"
    inference_options = ("echo_gain",)  # type: ignore[assignment]  # names, not BackendOptions

    def _inference_options(self, config: Any) -> dict[str, Any]:
        return resolve_backend_options(
            self.name, config.backend_options, (), field="InferenceConfig.backend_options"
        )


class Complex128Output(Gain):
    name = "broken-infer-output"

    def infer(self, model: Any, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        return super().infer(model, data, config, hooks=hooks).astype(np.complex128)


class ProgressNeverFinishes(Gain):
    name = "broken-progress"

    def infer(self, model: Any, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        relay = _Hooks(
            hooks, "ptycho_infer_progress", lambda kw: None if kw["done"] == kw["total"] else kw
        )
        return super().infer(model, data, config, hooks=relay)


class NoisyInference(Gain):
    name = "broken-infer-determinism"

    def infer(self, model: Any, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        out = super().infer(model, data, config, hooks=hooks)
        noise = np.random.default_rng().standard_normal(out.shape).astype(np.float32)
        return (out + 1e-6 * np.abs(out).max() * noise).astype(np.complex64)


class Lenient(Gain):
    """Inference with some of the required input checks switched off."""

    check_n = True
    check_channels = True
    check_backend = True

    def infer(self, model: Any, data: Any, config: Any, *, hooks: Any) -> np.ndarray:
        if self.check_backend and model.backend != self.name:
            raise ValueError(f"{self.name}: model of backend {model.backend!r}")
        if self.check_n and data.N != model.N:
            raise ValueError(f"{self.name}: data N={data.N}, model N={model.N}")
        if self.check_channels and data.channels != model.config.model.channels:
            raise ValueError(f"{self.name}: data channels {data.channels}")
        self._inference_options(config)
        return constant_patches(model, data, config, hooks)


class AcceptsAnyN(Lenient):
    name = "broken-wrong-n"
    check_n = False


class AcceptsAnyGridsize(Lenient):
    name = "broken-wrong-gridsize"
    check_channels = False


class AcceptsForeignModels(Lenient):
    name = "broken-foreign-model"
    check_backend = False


class ModifiesTrainingData(Gain):
    name = "broken-inputs"

    def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        model = super().train(data, config, hooks=hooks)
        data.groups.diffraction[0, 0, 0, 0] += 1.0
        return model


class LossySave(Gain):
    name = "broken-round-trip"

    def save(self, model: TrainedModel, path: Any) -> None:
        super().save(dataclasses.replace(model, network=np.asarray(model.network * 1.001)), path)


class ForgetfulSave(Gain):
    name = "broken-manifest"

    def save(self, model: TrainedModel, path: Any) -> None:
        super().save(dataclasses.replace(model, history={}), path)


class SavesAnything(Gain):
    name = "broken-save-foreign"

    def save(self, model: TrainedModel, path: Any) -> None:
        weights = np.asarray(model.network, dtype=np.complex128)
        write_bundle(
            path,
            model,
            lambda folder: np.savez(folder / WEIGHTS_FILE, c=weights),
            framework={"numpy": np.__version__},
        )


class LoadsAnyBackend(Gain):
    name = "broken-load-foreign"

    def load(self, path: Any) -> TrainedModel:
        with read_bundle(path) as contents:  # no expected_backend
            weights = contents.payload_dir / WEIGHTS_FILE
            if not weights.is_file():
                raise BundleError(f"bundle {path}: {WEIGHTS_FILE} is missing")
            with np.load(weights, allow_pickle=False) as archive:
                return contents.trained_model(np.asarray(archive["c"]))


class LeaksZipErrors(Gain):
    name = "broken-load-corrupt"

    def load(self, path: Any) -> TrainedModel:
        with zipfile.ZipFile(path):  # BadZipFile / FileNotFoundError escape unwrapped
            pass
        return super().load(path)


class ForwardWithoutChannelAxis(Gain):
    name = "broken-forward"

    def forward(self, model: Any, diffraction: np.ndarray, coords: np.ndarray) -> np.ndarray:
        return super().forward(model, diffraction, coords)[..., 0]


class RetrainsFromScratch(Gain):
    """Checks its inputs, then silently trains a new model instead of continuing."""

    name = "broken-warm-start"

    def train_from(self, model: Any, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        model.payload(self.name, np.ndarray)
        model.check_refinable(config, self.name)
        return self.train(data, config, hooks=hooks)


class RefinesAnyArchitecture(Gain):
    name = "broken-warm-start-mismatch"

    def train_from(self, model: Any, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
        return self._fit(data, config, hooks, np.complex128(model.payload(self.name, np.ndarray)))


class Echo(ObjectEchoBackend):
    """object-echo under another name (not registered): the base of the broken ones."""

    name = "echo-subclass"


class IgnoresInitialObject(Echo):
    name = "broken-infer-from"

    def infer_from(
        self, model: Any, data: Any, config: Any, initial_object: Any, *, hooks: Any
    ) -> np.ndarray:
        return self.infer(model, data, config, hooks=hooks)  # the flat start, silently


class InfersFromForeignModels(Echo):
    name = "broken-infer-from-foreign"

    def infer_from(
        self, model: Any, data: Any, config: Any, initial_object: Any, *, hooks: Any
    ) -> np.ndarray:
        return super().infer_from(
            dataclasses.replace(model, backend=self.name), data, config, initial_object, hooks=hooks
        )


BROKEN = [
    (BadDescription, "check_protocol", ["'description' to be a str", "int"]),
    (MisdeclaredOptions, "check_protocol", ["'inference_options' to be a tuple of BackendOption"]),
    (
        IgnoresTrainingOptions,
        "check_unknown_option",
        ["train with TrainingConfig.backend_options", "no_such_option_for_conformance"],
    ),
    (
        IgnoresInferenceOptions,
        "check_unknown_option",
        ["infer with InferenceConfig.backend_options", "to raise ValueError", "returned"],
    ),
    (MisspelledCapability, "check_protocol", ["capability names among", "'determinstic'"]),
    (StartCountsAllGroups, "check_train_start_hook", ["n_groups=", "n_groups=24"]),
    (NumpyFloatLosses, "check_epoch_end_hook", ["Python float", "numpy.float32"]),
    (EpochsFromOne, "check_epoch_end_hook", ["epochs [0, 1]", "[1, 2]"]),
    (TruncatedEndHistory, "check_train_end_hook", ["history equal to TrainedModel.history"]),
    (RecomputedScale, "check_trained_model", ["intensity_scale=", "never recomputed"]),
    (AdaptsMismatchedConfig, "check_train_rejects_mismatch", ["to raise ValueError"]),
    (UnseededTraining, "check_train_deterministic", ["same inference output", "max difference"]),
    (Complex128Output, "check_infer_output", ["complex64 of shape (24, 64, 64, 1)", "complex128"]),
    (ProgressNeverFinishes, "check_infer_progress", ["done == total == 24", "done=20"]),
    (NoisyInference, "check_infer_deterministic", ["bit-identical output"]),
    (AcceptsAnyN, "check_infer_rejects_wrong_n", ["N=32 data on an N=64 model", "returned"]),
    (AcceptsAnyGridsize, "check_infer_rejects_wrong_gridsize", ["4 patterns per group"]),
    (AcceptsForeignModels, "check_infer_rejects_foreign_model", ["'conformance-foreign'"]),
    (ModifiesTrainingData, "check_inputs_unchanged", ["leave its TrainingData unchanged"]),
    (LossySave, "check_save_load_round_trip", ["bit-identical infer output after save"]),
    (ForgetfulSave, "check_bundle_manifest", ["manifest history"]),
    (SavesAnything, "check_save_rejects_foreign_model", ["to raise ValueError", "returned None"]),
    (LoadsAnyBackend, "check_load_rejects_foreign_bundle", ["BackendMismatchError", "BundleError"]),
    (LeaksZipErrors, "check_load_rejects_corrupt_bundle", ["to raise BundleError", "BadZipFile"]),
    (ForwardWithoutChannelAxis, "check_forward", ["shape (10, 64, 64, 1)", "(10, 64, 64)"]),
    (RetrainsFromScratch, "check_warm_start", ["training from scratch"]),
    (RefinesAnyArchitecture, "check_warm_start_rejects_mismatch", ["n_filters_scale=2"]),
    (IgnoresInitialObject, "check_infer_from", ["differ from infer's", "identical"]),
    (InfersFromForeignModels, "check_infer_from_rejects_foreign_model", ["to raise ValueError"]),
]


def test_every_rule_has_a_broken_backend() -> None:
    """Each check of the kit is shown to fail (selection-imports below, in its own test)."""
    covered = {check for _, check, _ in BROKEN} | {"check_selection_imports"}
    assert covered == set(RULES)


def test_the_base_of_the_broken_backends_passes() -> None:
    report = check_backend(Gain)
    assert report.passed, str(report)
    assert [r.check for r in report.skipped] == [
        "check_selection_imports",
        "check_infer_from",
        "check_infer_from_rejects_foreign_model",
    ]
    echo = check_backend(Echo)
    assert echo.passed, str(echo)
    assert [r.check for r in echo.skipped] == ["check_selection_imports"]


@pytest.mark.parametrize(
    ("broken", "check", "fragments"), BROKEN, ids=[cls.name for cls, _, _ in BROKEN]
)
def test_a_broken_rule_fails_exactly_its_check(
    broken: type, check: str, fragments: list[str]
) -> None:
    report = check_backend(broken)
    failed = [r.check for r in report.failures]
    assert failed == [check], str(report)
    message = report.failures[0].message
    assert f"backend {broken.name!r} breaks rule '{RULES[check]}'" in message, message
    assert "specs/backend-protocol.md §" in message and "expected " in message
    assert "; found " in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    with pytest.raises(ConformanceError, match=RULES[check]) as caught:
        report.raise_if_failed()
    assert isinstance(caught.value, AssertionError)


def test_nondeterministic_inference_skips_the_bit_for_bit_round_trip() -> None:
    report = check_backend(NoisyInference, checks=["save-load-round-trip"])
    (result,) = report.results
    assert result.status == "skipped" and "infer-deterministic" in result.message


def test_a_running_check_raises_conformance_error_naming_the_rule() -> None:
    harness = BackendHarness(Complex128Output)
    try:
        with pytest.raises(ConformanceError) as caught:
            dict((c.__name__, c) for c in CHECKS)["check_infer_output"](harness)
        error = caught.value
        assert (error.rule, error.backend) == ("infer-output", "broken-infer-output")
        assert "complex64" in error.expected and "complex128" in error.found
    finally:
        harness.close()


def test_a_capability_skips_its_check_with_the_reason() -> None:
    class DeclaredNondeterministic(UnseededTraining):
        name = "nondeterministic-by-declaration"
        capabilities = {"deterministic": False}  # noqa: RUF012

    report = check_backend(DeclaredNondeterministic)
    assert report.passed, str(report)
    skipped = {r.check: r.message for r in report.skipped}
    assert skipped["check_train_deterministic"] == (
        "backend declares capabilities['deterministic'] = False"
    )
    assert set(KNOWN_CAPABILITIES) == {"deterministic", "gridsize_gt_1", "trains"}


def test_a_backend_that_does_not_train_must_import_its_models() -> None:
    """``trains`` False skips the training checks; the model of the others comes from
    ``import_arrays``, so a backend without it breaks rule 'trains' instead of passing."""

    class InferenceOnly(Gain):
        name = "inference-only"
        capabilities = {"trains": False}  # noqa: RUF012

    report = check_backend(InferenceOnly)
    skipped = {r.check for r in report.skipped}
    assert {"check_trained_model", "check_train_deterministic", "check_epoch_end_hook"} <= skipped
    failed = {r.check: r.message for r in report.results if r.status == "failed"}
    assert "check_infer_output" in failed and "rule 'trains'" in failed["check_infer_output"]


def test_gridsize_capability_skips_training_checks_at_gridsize_2() -> None:
    class SingleOnly(Gain):
        name = "single-pattern-only"
        capabilities = {"gridsize_gt_1": False}  # noqa: RUF012

    report = check_backend(SingleOnly, gridsize=2)
    assert report.passed
    statuses = {r.check: r.status for r in report.results}
    assert statuses["check_protocol"] == "passed"
    assert statuses["check_infer_output"] == "skipped"


def test_a_backend_whose_train_raises_fails_with_train_runs() -> None:
    class Crashes(Gain):
        name = "crashes"

        def train(self, data: Any, config: Any, *, hooks: Any) -> TrainedModel:
            raise RuntimeError("out of memory, pretend")

    report = check_backend(Crashes, checks=["train-start-hook", "infer-output"])
    assert [r.status for r in report.results] == ["failed", "failed"]
    for result in report.results:
        assert "breaks rule 'train-runs'" in result.message
        assert "RuntimeError: out of memory, pretend" in result.message


def test_a_broken_signature_is_reported_by_the_protocol_check() -> None:
    class NeedsExtraArgument(Gain):
        name = "extra-argument"

        def save(self, model: TrainedModel, path: Any, *, compress: bool) -> None:  # type: ignore[override]
            super().save(model, path)

    report = check_backend(NeedsExtraArgument, checks=["protocol"])
    (result,) = report.failures
    assert "breaks rule 'protocol'" in result.message
    assert "cannot be called as save(model, path)" in result.message


def test_check_skipped_is_not_a_failure() -> None:
    assert not issubclass(CheckSkipped, AssertionError)
    assert issubclass(ConformanceError, AssertionError)


# ----------------------------------------------------------------------- selection imports


def _write_distribution(site: Path, name: str, entry_point: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[ptycho.backends]\n{entry_point}\n")


def _write_module(site: Path, dotted: str, source: str) -> None:
    path = site.joinpath(*dotted.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in path.relative_to(site).parents:
        if str(folder) != ".":
            (site / folder / "__init__.py").touch()
    path.write_text(textwrap.dedent(source))


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three real (tiny) distributions on sys.path: a backend 'conformance-other' needing
    the framework module ptycho_conformance_fw, a backend 'conformance-greedy' whose
    implementation imports that framework, and a clean one, 'conformance-clean'."""
    site = tmp_path / "site"
    site.mkdir()
    _write_module(site, "ptycho_conformance_fw", "LOADED = True\n")
    spec = """
        from ptycho_core.protocol import BackendSpec

        OTHER = BackendSpec(name="conformance-other", target="ptycho_conformance_other.impl:B",
                            requires=("ptycho_conformance_fw",))
        GREEDY = BackendSpec(name="conformance-greedy",
                             target="ptycho_conformance_mine.greedy:Greedy", requires=("numpy",))
        CLEAN = BackendSpec(name="conformance-clean",
                            target="ptycho_conformance_mine.clean:Clean", requires=("numpy",))
        """
    _write_module(site, "ptycho_conformance_other.spec", spec)
    _write_module(site, "ptycho_conformance_mine.spec", spec)
    implementation = """
        {imports}
        from ptycho_testbackends.gain import NumpyGainBackend

        class {cls}(NumpyGainBackend):
            name = "{name}"
        """
    _write_module(
        site,
        "ptycho_conformance_mine.greedy",
        implementation.format(
            imports="import ptycho_conformance_fw  # noqa", cls="Greedy", name="conformance-greedy"
        ),
    )
    _write_module(
        site,
        "ptycho_conformance_mine.clean",
        implementation.format(imports="", cls="Clean", name="conformance-clean"),
    )
    _write_distribution(
        site, "conformance-other", "conformance-other = ptycho_conformance_other.spec:OTHER"
    )
    _write_distribution(
        site, "conformance-greedy", "conformance-greedy = ptycho_conformance_mine.spec:GREEDY"
    )
    _write_distribution(
        site, "conformance-clean", "conformance-clean = ptycho_conformance_mine.spec:CLEAN"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for module in [m for m in sys.modules if m.startswith("ptycho_conformance_")]:
        del sys.modules[module]


def test_selection_that_imports_another_backends_framework_fails(fake_site: Path) -> None:
    report = check_backend("conformance-greedy", checks=["selection-imports"])
    (result,) = report.results
    assert result.status == "failed", str(report)
    assert "breaks rule 'selection-imports'" in result.message
    assert "it imported ptycho_conformance_fw (needed by 'conformance-other'" in result.message
    clean = check_backend("conformance-clean", checks=["selection-imports", "protocol"])
    assert clean.passed, str(clean)
    assert [r.status for r in clean.results] == ["passed", "passed"]


def test_selection_imports_is_skipped_for_a_class() -> None:
    report = check_backend(Gain, checks=["selection-imports"])
    assert report.results[0].status == "skipped"
    assert "not an entry point name" in report.results[0].message


# ----------------------------------------------------------------------- the command line


def test_cli_check_backend_passes_numpy_gain() -> None:
    result = run_cli("check-backend", "numpy-gain", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["backend"] == "numpy-gain"
    assert len(report["results"]) == len(CHECKS)
    text = run_cli("check-backend", "numpy-gain", "--check", "infer-output").stdout
    assert "PASSED  check_infer_output" in text and "1 passed, 0 failed, 0 skipped" in text


def test_cli_check_backend_exit_status_on_a_broken_rule() -> None:
    # the test backend 'direct-zero' accepts a model of another backend in infer
    result = run_cli("check-backend", "direct-zero", "--check", "infer-rejects-foreign-model")
    assert result.returncode == 1
    assert "FAILED  check_infer_rejects_foreign_model" in result.stdout
    assert "breaks rule 'infer-rejects-foreign-model'" in result.stdout


def test_cli_check_backend_user_errors() -> None:
    result = run_cli("check-backend", "no-such-backend")
    assert result.returncode == 2
    assert result.stderr.startswith("ptycho check-backend: error: unknown backend")
    result = run_cli("check-backend", "numpy-gain", "--check", "nonsense")
    assert result.returncode == 2 and "unknown check 'nonsense'" in result.stderr

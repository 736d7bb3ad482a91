"""The backend conformance kit: does a backend honour specs/backend-protocol.md?

Every backend, in-tree or third-party, can be checked with one call or one pytest
decorator (the design follows scikit-learn's ``check_estimator`` /
``parametrize_with_checks``)::

    from ptycho_core.testing import check_backend
    report = check_backend("epie")          # an entry point name, a class or an instance
    print(report)                           # one line per check
    report.raise_if_failed()                # ConformanceError listing every broken rule

    # in a test file: one test per (backend, check), selectable with pytest -k
    from ptycho_core.testing import parametrize_with_checks

    @parametrize_with_checks(["epie"])
    def test_conformance(backend, check):
        check(backend)

or from the shell: ``ptycho check-backend epie``.

The checks use the backend only through the public protocol, on a tiny simulated
dataset (``ptycho_core.simulate``): train, infer, save, load, the hooks, the bundle
manifest, the errors for wrong inputs, determinism, and what selecting it imports.
Each check is a named function taking a :class:`BackendHarness`; a broken rule raises
:class:`ConformanceError` (an ``AssertionError``) naming the rule, what was expected
and what was found. A backend may declare ``capabilities`` (see
:data:`KNOWN_CAPABILITIES`) so that checks of features it does not offer are skipped
with a reason instead of failing. The optional protocols (warm start, initial object)
are checked only for a backend that implements them (``isinstance`` against
:class:`~ptycho_core.protocol.SupportsWarmStart` and
:class:`~ptycho_core.protocol.SupportsInitialObject`).

numpy only: pytest is imported lazily, inside the pytest-facing helpers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ptycho_core.backend_selector import (
    available_backends,
    backend_info,
    protocol_problem,
    select_backend,
)
from ptycho_core.bundle import FORMAT_NAME, FORMAT_VERSION, json_value, read_manifest, write_bundle
from ptycho_core.config import SUPPORTED_N, InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.errors import BackendMismatchError, BundleError
from ptycho_core.geometry import extract_patches
from ptycho_core.grouping import GroupedData, make_groups
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import (
    SupportsInitialObject,
    SupportsWarmStart,
    TrainedModel,
    TrainingData,
)
from ptycho_core.stitching import Stitched

__all__ = [
    "CHECKS",
    "FOREIGN_BACKEND",
    "KNOWN_CAPABILITIES",
    "BackendHarness",
    "CheckResult",
    "CheckSkipped",
    "ConformanceError",
    "ConformanceReport",
    "HookRecorder",
    "backend_checks",
    "check_backend",
    "parametrize_with_checks",
    "run_check",
]

SPEC = "specs/backend-protocol.md"
FOREIGN_BACKEND = "conformance-foreign"
"""Backend name of the bundles and models the kit forges to test refusals."""

KNOWN_CAPABILITIES: Mapping[str, str] = MappingProxyType(
    {
        "deterministic": "training is reproducible for a seed on the CPU (check 'train-deterministic')",
        "gridsize_gt_1": "gridsize > 1 is supported (the training and inference checks at gridsize > 1)",
    }
)
"""Capability names a backend may declare in ``capabilities``; all default to True."""

# Modules that ptycho_core itself needs: never "another backend's" dependency.
_CORE_MODULES = frozenset({"numpy", "scipy", "pluggy", "ptycho_core", "importlib_metadata"})
_DEFAULT_N = 64
_DEFAULT_GRIDSIZE = 1
_ACCELERATOR = "cpu"  # every run of the kit is on the CPU
_N_POSITIONS = 24
_EPOCHS = 2
_TRAIN_BATCH = 8
_INFER_BATCH = 10
_VALIDATION_SPLIT = 0.25
_SEED = 3
_DETERMINISM_RTOL = 1e-4
_METHOD_SECTIONS: Mapping[str, str] = {
    "train": "§4.1",
    "infer": "§4.2",
    "save": "§4.3",
    "load": "§4.4",
    "train_from": "§9.1",
    "infer_from": "§9.2",
    "model_from_probe": "§9.2",
}
# The initial object of the initial-object checks: the true object cropped (so its origin
# matters), rescaled and phase-shifted (scale and global phase are arbitrary, §9.2).
_START_CROP = (5, 3)
_START_FACTOR = 2.5 * np.exp(0.8j)


# ----------------------------------------------------------------------------- errors


class ConformanceError(AssertionError):
    """A backend broke a rule of the protocol: names the rule, what was expected and found."""

    def __init__(
        self, rule: str, expected: str, found: str, *, backend: str = "?", section: str = ""
    ) -> None:
        self.rule = rule
        self.expected = expected
        self.found = found
        self.backend = backend
        self.section = section
        where = f" ({SPEC} {section})" if section else ""
        super().__init__(
            f"backend {backend!r} breaks rule '{rule}'{where}: expected {expected}; found {found}"
        )


class CheckSkipped(Exception):
    """A check does not apply to this backend (a declared capability, a missing extra)."""


# ----------------------------------------------------------------------------- hooks


@dataclass
class HookRecorder:
    """A real pluggy plugin that records every hook call with its arguments.

    Useful in a backend's own tests too: ``recorder.relay()`` is the ``hooks`` argument,
    ``recorder.named('epoch_end')`` the recorded keyword arguments of one hook.
    """

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @hookimpl
    def ptycho_train_start(self, backend: Any, config: Any, n_groups: Any) -> None:
        self.calls.append(
            ("train_start", {"backend": backend, "config": config, "n_groups": n_groups})
        )

    @hookimpl
    def ptycho_epoch_end(self, epoch: Any, nepochs: Any, losses: Any) -> None:
        copied = dict(losses) if isinstance(losses, Mapping) else losses
        self.calls.append(("epoch_end", {"epoch": epoch, "nepochs": nepochs, "losses": copied}))

    @hookimpl
    def ptycho_train_end(self, history: Any) -> None:
        copied = (
            {k: list(v) for k, v in history.items()} if isinstance(history, Mapping) else history
        )
        self.calls.append(("train_end", {"history": copied}))

    @hookimpl
    def ptycho_infer_progress(self, done: Any, total: Any) -> None:
        self.calls.append(("infer_progress", {"done": done, "total": total}))

    def named(self, name: str) -> list[dict[str, Any]]:
        return [args for call, args in self.calls if call == name]

    def relay(self) -> Any:
        return make_plugin_manager(self, load_entry_points=False).hook


# ----------------------------------------------------------------------------- harness


def _fingerprint(*arrays: Any) -> str:
    """SHA-256 over the bytes, dtypes and shapes of arrays (None allowed)."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        arr = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{arr.dtype.str}{arr.shape}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _groups_fingerprint(groups: GroupedData) -> str:
    return _fingerprint(
        groups.diffraction,
        groups.coords_relative,
        groups.coords_offsets,
        groups.nn_indices,
        groups.object_patches,
        np.float64(groups.normalisation),
    )


class _Lazy:
    """A value computed once; a failure is remembered and raised again."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self._compute = compute
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def get(self) -> Any:
        if not self._done:
            try:
                self._value = self._compute()
            except Exception as error:
                self._error = error
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


@dataclass(frozen=True, eq=False)
class _Run:
    """One call of train or infer: its result, the hook calls and the input fingerprints."""

    result: Any
    recorder: HookRecorder
    before: str
    after: str
    seconds: float


class BackendHarness:
    """A backend under test and the artefacts its checks share, each computed once.

    ``backend`` is an entry point name (selected with :func:`select_backend`, as users
    do), a backend class (instantiated with no arguments) or a backend instance. Data:
    a simulated dataset of 24 positions at pattern size ``N``; training runs 2 epochs,
    batch 8, a quarter of the groups held out for validation, on the CPU.
    """

    def __init__(
        self,
        backend: str | type | object,
        *,
        N: int = _DEFAULT_N,
        gridsize: int = _DEFAULT_GRIDSIZE,
        tmp_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if N not in SUPPORTED_N:
            raise ValueError(f"check_backend: N expected one of {SUPPORTED_N}, found {N!r}")
        if isinstance(gridsize, bool) or not isinstance(gridsize, int) or gridsize < 1:
            raise ValueError(
                f"check_backend: gridsize expected an integer >= 1, found {gridsize!r}"
            )
        self.spec = backend
        self.N = N
        self.gridsize = gridsize
        self.selected_by_name = isinstance(backend, str)
        if isinstance(backend, str):
            self.name = backend
        elif inspect.isclass(backend):
            self.name = str(getattr(backend, "name", backend.__qualname__))
        else:
            self.name = str(getattr(backend, "name", type(backend).__qualname__))
        self._tmp: Path | None = Path(tmp_dir) if tmp_dir is not None else None
        self._finalizer: weakref.finalize | None = None
        self._backend = _Lazy(self.new_backend)
        self._dataset = _Lazy(self._make_dataset)
        self._trained = _Lazy(self._train_main)
        self._inferred = _Lazy(self._infer_main)
        self._bundle = _Lazy(self._save_main)

    def __repr__(self) -> str:
        return f"BackendHarness({self.name!r}, N={self.N}, gridsize={self.gridsize})"

    # -- resources

    @property
    def tmp(self) -> Path:
        """A folder for bundles (deleted by :meth:`close` unless it was given)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="ptycho-conformance-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        return self._tmp

    def close(self) -> None:
        """Delete the temporary folder the harness created (if any)."""
        if self._finalizer is not None:
            self._finalizer()

    # -- the backend

    def new_backend(self) -> Any:
        """A fresh backend object: selected again by name, or the class instantiated."""
        if isinstance(self.spec, str):
            return select_backend(self.spec)
        if inspect.isclass(self.spec):
            return self.spec()
        return self.spec

    @property
    def backend(self) -> Any:
        return self._backend.get()

    @property
    def capabilities(self) -> dict[str, bool]:
        """Declared capabilities merged over the defaults (all True)."""
        declared = getattr(self.backend, "capabilities", None)
        merged = dict.fromkeys(KNOWN_CAPABILITIES, True)
        if isinstance(declared, Mapping):
            merged.update({k: v for k, v in declared.items() if isinstance(v, bool)})
        return merged

    def require(self, capability: str) -> None:
        """Skip the calling check when the backend declares ``capability`` False."""
        if not self.capabilities.get(capability, True):
            raise CheckSkipped(f"backend declares capabilities[{capability!r}] = False")

    def require_gridsize(self) -> None:
        if self.gridsize > 1:
            self.require("gridsize_gt_1")

    # -- data and configs

    def _make_dataset(self) -> Any:
        from ptycho_core.simulate import default_simulation_config, simulate

        return simulate(
            default_simulation_config("train", N=self.N, n_positions=_N_POSITIONS, seed=_SEED)
        )

    @property
    def dataset(self) -> Any:
        """The simulated :class:`~ptycho_core.data.PtychoData` every check uses."""
        return self._dataset.get()

    def training_config(self, **changes: Any) -> TrainingConfig:
        model = ModelConfig(N=self.N, gridsize=self.gridsize)
        values: dict[str, Any] = {
            "model": model,
            "backend": self.name,
            "nepochs": _EPOCHS,
            "batch_size": _TRAIN_BATCH,
            "n_groups": None,
            "validation_split": _VALIDATION_SPLIT,
            "seed": _SEED,
            "accelerator": _ACCELERATOR,
        }
        values.update(changes)
        return TrainingConfig(**values)

    def inference_config(self, **changes: Any) -> InferenceConfig:
        values: dict[str, Any] = {
            "backend": self.name,
            "batch_size": _INFER_BATCH,
            "seed": _SEED,
            "accelerator": _ACCELERATOR,
        }
        values.update(changes)
        return InferenceConfig(**values)

    def training_data(self, config: TrainingConfig | None = None) -> TrainingData:
        """Fresh training data (new arrays on every call)."""
        from ptycho_core.workflows import prepare_training_data

        return prepare_training_data(self.dataset, config or self.training_config())

    def groups(self) -> GroupedData:
        """Fresh inference groups (new arrays on every call), one per position."""
        neighbours = max(4, self.gridsize**2)
        return make_groups(
            self.dataset, self.gridsize, n_groups=None, neighbor_count=neighbours, seed=_SEED
        )

    # -- runs

    def train(self, config: TrainingConfig | None = None) -> _Run:
        """Train on fresh data; record the hook calls and fingerprint the inputs."""
        config = config or self.training_config()
        data = self.training_data(config)
        recorder = HookRecorder()
        before = _fingerprint(data.probe, np.float64(data.intensity_scale)) + _groups_fingerprint(
            data.groups
        )
        start = time.perf_counter()
        model = self.call(
            "train",
            lambda: self.backend.train(data, config, hooks=recorder.relay()),
            "train(data, config, hooks=...) to return a TrainedModel",
        )
        seconds = time.perf_counter() - start
        after = _fingerprint(data.probe, np.float64(data.intensity_scale)) + _groups_fingerprint(
            data.groups
        )
        return _Run(model, recorder, before, after, seconds)

    def infer(self, model: TrainedModel, groups: GroupedData | None = None) -> _Run:
        """Infer on fresh groups; record the hook calls and fingerprint the inputs."""
        groups = self.groups() if groups is None else groups
        recorder = HookRecorder()
        before = _groups_fingerprint(groups) + _fingerprint(model.probe)
        start = time.perf_counter()
        out = self.call(
            "infer",
            lambda: self.backend.infer(
                model, groups, self.inference_config(), hooks=recorder.relay()
            ),
            "infer(model, data, config, hooks=...) to return the object patches",
        )
        seconds = time.perf_counter() - start
        after = _groups_fingerprint(groups) + _fingerprint(model.probe)
        return _Run(out, recorder, before, after, seconds)

    def _train_main(self) -> _Run:
        self.require_gridsize()
        return self.train()

    def _infer_main(self) -> _Run:
        return self.infer(self.model)

    def _save_main(self) -> Path:
        path = self.tmp / "model.ptycho"
        self.call(
            "save", lambda: self.backend.save(self.model, path), "save(model, path) to succeed"
        )
        return path

    @property
    def trained(self) -> _Run:
        """The main training run (computed once)."""
        return self._trained.get()

    @property
    def model(self) -> TrainedModel:
        model = self.trained.result
        if not isinstance(model, TrainedModel):
            raise self.error(
                "trained-model",
                "train to return a ptycho_core.protocol.TrainedModel",
                f"{type(model).__name__}",
                "§4.1",
            )
        return model

    @property
    def inferred(self) -> _Run:
        """The main inference run on :meth:`groups` (computed once)."""
        return self._inferred.get()

    @property
    def bundle(self) -> Path:
        """The main model saved as a bundle (computed once)."""
        return self._bundle.get()

    # -- failures

    def error(self, rule: str, expected: str, found: str, section: str = "") -> ConformanceError:
        return ConformanceError(rule, expected, found, backend=self.name, section=section)

    def call(self, method: str, action: Callable[[], Any], expected: str) -> Any:
        """Run a backend call; an exception becomes a ConformanceError naming the call."""
        try:
            return action()
        except (ConformanceError, CheckSkipped):
            raise
        except Exception as error:
            raise ConformanceError(
                f"{method}-runs",
                expected,
                f"{type(error).__name__}: {error}",
                backend=self.name,
                section=_METHOD_SECTIONS.get(method, ""),
            ) from error


# ----------------------------------------------------------------------------- helpers


def _check(rule: str, section: str) -> Callable[[Callable[[BackendHarness], None]], Any]:
    """Mark a function as a check of ``rule`` (spec section ``section``)."""

    def mark(function: Callable[[BackendHarness], None]) -> Any:
        function.rule = rule  # type: ignore[attr-defined]
        function.section = section  # type: ignore[attr-defined]
        return function

    return mark


def _fail(h: BackendHarness, check: Any, expected: str, found: str) -> ConformanceError:
    return h.error(check.rule, expected, found, check.section)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expect_raises(
    h: BackendHarness,
    check: Any,
    action: Callable[[], Any],
    kind: type[BaseException],
    what: str,
    must_name: Sequence[str] = (),
) -> BaseException:
    """Run ``action``; it must raise ``kind`` whose message contains every ``must_name``."""
    try:
        result = action()
    except kind as error:
        message = str(error)
        missing = [text for text in must_name if text not in message]
        if missing:
            raise _fail(
                h,
                check,
                f"{what} to raise {kind.__name__} naming {', '.join(map(repr, must_name))}",
                f"{type(error).__name__} without {', '.join(map(repr, missing))}: {message!r}",
            ) from error
        return error
    except Exception as error:
        raise _fail(
            h, check, f"{what} to raise {kind.__name__}", f"{type(error).__name__}: {error}"
        ) from error
    raise _fail(h, check, f"{what} to raise {kind.__name__}", f"it returned {_short(result, 60)}")


def _history_lists(history: Any) -> dict[str, list[float]] | None:
    if not isinstance(history, Mapping):
        return None
    try:
        return {str(k): [float(x) for x in v] for k, v in history.items()}
    except (TypeError, ValueError):
        return None


def _same_history(a: Any, b: Any) -> bool:
    la, lb = _history_lists(a), _history_lists(b)
    if la is None or lb is None or la.keys() != lb.keys():
        return False
    return all(
        len(la[k]) == len(lb[k])
        and all(
            x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(la[k], lb[k], strict=True)
        )
        for k in la
    )


def _groups_with(groups: GroupedData, **changes: Any) -> GroupedData:
    return dataclasses.replace(groups, **changes)


# ----------------------------------------------------------------------------- checks


@_check("protocol", "§1, §2 step 7, §5")
def check_protocol(h: BackendHarness) -> None:
    """The object has a string ``name`` and callable ``train``/``infer``/``save``/``load``
    accepting the protocol's calls; optional extras have the reserved types; a backend
    selected by name is listed as usable by ``ptycho backends``."""
    me = check_protocol
    backend = h.backend
    problem = protocol_problem(backend, h.name)
    if problem is not None:
        raise _fail(h, me, "a ptycho backend (name and four protocol methods)", problem)
    description = getattr(backend, "description", None)
    if description is not None and not isinstance(description, str):
        raise _fail(
            h, me, "'description' to be a str when present", f"{type(description).__name__}"
        )
    forward = getattr(backend, "forward", None)
    if forward is not None and not callable(forward):
        raise _fail(h, me, "'forward' to be callable when present", f"{type(forward).__name__}")
    capabilities = getattr(backend, "capabilities", None)
    if capabilities is not None:
        if not isinstance(capabilities, Mapping):
            raise _fail(
                h,
                me,
                "'capabilities' to be a mapping of capability name to bool",
                f"{type(capabilities).__name__}",
            )
        unknown = sorted(str(k) for k in capabilities if k not in KNOWN_CAPABILITIES)
        if unknown:
            raise _fail(
                h,
                me,
                f"capability names among {', '.join(map(repr, KNOWN_CAPABILITIES))}",
                f"unknown {', '.join(map(repr, unknown))}",
            )
        not_bool = sorted(str(k) for k, v in capabilities.items() if not isinstance(v, bool))
        if not_bool:
            raise _fail(h, me, "capability values True or False", f"non-bool values for {not_bool}")
    if h.selected_by_name:
        info = backend_info(h.name)
        if not info.usable:
            raise _fail(h, me, "'ptycho backends' to list it as usable", f"{info.reason}")


_SELECTION_PROBE = textwrap.dedent(
    """
    import json, sys
    from ptycho_core.backend_selector import select_backend
    select_backend(sys.argv[1])
    print(json.dumps(sorted({name.partition(".")[0] for name in sys.modules})))
    """
)


@_check("selection-imports", "§2")
def check_selection_imports(h: BackendHarness) -> None:
    """In a fresh interpreter, selecting the backend imports no module that another
    installed backend declares in its ``requires`` and this one does not (nor does core):
    selecting pytorch never imports tensorflow."""
    me = check_selection_imports
    if not h.selected_by_name:
        raise CheckSkipped("the backend was given as a class or instance, not an entry point name")
    infos = available_backends()
    own_modules = set(_CORE_MODULES)
    for info in infos:
        if info.name == h.name:
            own_modules.update(info.requires)
    owners: dict[str, list[str]] = {}
    for info in infos:
        if info.name == h.name:
            continue
        for module in info.requires:
            if module not in own_modules:
                owners.setdefault(module, []).append(f"{info.name!r} ({info.distribution})")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p])
    result = subprocess.run(
        [sys.executable, "-c", _SELECTION_PROBE, h.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise _fail(h, me, f"select_backend({h.name!r}) to succeed in a fresh interpreter", tail)
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    leaked = sorted(imported & owners.keys())
    if leaked:
        found = "; ".join(f"{m} (needed by {', '.join(owners[m])})" for m in leaked)
        raise _fail(
            h,
            me,
            f"selecting {h.name!r} to import none of another backend's modules",
            f"it imported {found}",
        )


@_check("train-start-hook", "§4.1")
def check_train_start_hook(h: BackendHarness) -> None:
    """``ptycho_train_start`` is called once, first, with the backend name, the config and
    the number of training groups after the validation split."""
    me = check_train_start_hook
    run = h.trained
    calls = run.recorder.calls
    starts = run.recorder.named("train_start")
    if len(starts) != 1:
        raise _fail(h, me, "ptycho_train_start called exactly once", f"{len(starts)} calls")
    if calls[0][0] != "train_start":
        raise _fail(h, me, "ptycho_train_start before any other hook", f"first call {calls[0][0]}")
    config = h.training_config()
    train, _ = h.training_data(config).split(config.validation_split)
    args = starts[0]
    expected = {"backend": h.name, "config": config, "n_groups": train.n_groups}
    for key, value in expected.items():
        if args[key] != value or (key == "n_groups" and type(args[key]) is not int):
            shown = "the training config" if key == "config" else repr(value)
            raise _fail(
                h,
                me,
                f"{key}={shown} (n_groups: training groups after the validation split)",
                f"{key}={_short(args[key])}",
            )


@_check("epoch-end-hook", "§4.1")
def check_epoch_end_hook(h: BackendHarness) -> None:
    """``ptycho_epoch_end`` is called after every epoch with ``epoch`` = 0, 1, ...,
    ``nepochs`` = config.nepochs and ``losses`` holding Python floats ``'loss'`` (and
    ``'val_loss'`` when a validation split exists)."""
    me = check_epoch_end_hook
    run = h.trained
    config = h.training_config()
    ends = run.recorder.named("epoch_end")
    if not 1 <= len(ends) <= config.nepochs:
        raise _fail(h, me, f"between 1 and {config.nepochs} ptycho_epoch_end calls", f"{len(ends)}")
    epochs = [args["epoch"] for args in ends]
    if epochs != list(range(len(ends))):
        raise _fail(h, me, f"epochs {list(range(len(ends)))} (counting from 0)", f"{epochs}")
    for args in ends:
        if args["nepochs"] != config.nepochs:
            raise _fail(h, me, f"nepochs={config.nepochs}", f"nepochs={args['nepochs']!r}")
        losses = args["losses"]
        if not isinstance(losses, Mapping) or "loss" not in losses:
            raise _fail(h, me, "losses holding 'loss'", _short(losses))
        if "val_loss" not in losses:
            raise _fail(
                h, me, "'val_loss' in losses (the config holds a validation split)", _short(losses)
            )
        for key, value in losses.items():
            if type(value) is not float:
                raise _fail(
                    h,
                    me,
                    f"losses[{key!r}] to be a Python float (use float(value))",
                    f"{type(value).__module__}.{type(value).__qualname__} {value!r}",
                )


@_check("train-end-hook", "§4.1")
def check_train_end_hook(h: BackendHarness) -> None:
    """``ptycho_train_end`` is called once, last, with ``history`` equal to the returned
    ``TrainedModel.history`` (one value per epoch)."""
    me = check_train_end_hook
    run = h.trained
    calls = run.recorder.calls
    ends = run.recorder.named("train_end")
    if len(ends) != 1:
        raise _fail(h, me, "ptycho_train_end called exactly once", f"{len(ends)} calls")
    if calls[-1][0] != "train_end":
        raise _fail(h, me, "ptycho_train_end as the last hook", f"last call {calls[-1][0]}")
    history = ends[0]["history"]
    model = h.model
    if not _same_history(history, model.history):
        raise _fail(
            h,
            me,
            f"history equal to TrainedModel.history {_short(_history_lists(model.history))}",
            _short(history),
        )
    n_epochs = len(run.recorder.named("epoch_end"))
    lengths = {k: len(v) for k, v in (_history_lists(history) or {}).items()}
    if any(length != n_epochs for length in lengths.values()):
        raise _fail(h, me, f"{n_epochs} values per history entry (one per epoch)", f"{lengths}")


@_check("trained-model", "§4.1")
def check_trained_model(h: BackendHarness) -> None:
    """``train`` returns a TrainedModel with this backend's name, the given config, the
    normalised probe as complex64 (N, N), the given intensity scale, a per-epoch history
    with ``'loss'`` and JSON-compatible ``extra``."""
    me = check_trained_model
    model = h.model
    data = h.training_data()
    if model.backend != h.name:
        raise _fail(h, me, f"backend={h.name!r}", f"backend={model.backend!r}")
    if model.config != h.training_config():
        raise _fail(h, me, "config equal to the training config", _short(model.config))
    probe = model.probe
    if (
        not isinstance(probe, np.ndarray)
        or probe.dtype != np.complex64
        or probe.shape != (h.N, h.N)
    ):
        raise _fail(
            h,
            me,
            f"probe a complex64 ndarray of shape ({h.N}, {h.N})",
            f"{type(probe).__name__} {getattr(probe, 'dtype', '?')} {getattr(probe, 'shape', '?')}",
        )
    if not np.array_equal(probe, data.probe):
        raise _fail(h, me, "probe equal to the normalised probe P̃ it was given", "another probe")
    if model.intensity_scale != data.intensity_scale:
        raise _fail(
            h,
            me,
            f"intensity_scale={data.intensity_scale!r} (as given, never recomputed)",
            f"{model.intensity_scale!r}",
        )
    history = _history_lists(model.history)
    n_epochs = len(h.trained.recorder.named("epoch_end"))
    if history is None or "loss" not in history:
        raise _fail(h, me, "history with per-epoch 'loss' values", _short(model.history))
    if len(history["loss"]) != n_epochs:
        raise _fail(h, me, f"{n_epochs} 'loss' values (one per epoch)", f"{len(history['loss'])}")
    try:
        json_value(dict(model.extra), "TrainedModel.extra")
    except (ValueError, TypeError) as error:
        raise _fail(h, me, "JSON-compatible extra", str(error)) from error


@_check("train-rejects-mismatch", "§4.1")
def check_train_rejects_mismatch(h: BackendHarness) -> None:
    """``train`` raises ValueError before the first epoch when the data's N or number of
    patterns per group differ from the config's."""
    me = check_train_rejects_mismatch
    other_N = next(n for n in SUPPORTED_N if n != h.N)
    config = h.training_config()
    data = h.training_data(config)
    cases = [
        (
            config.replace(model=config.model.replace(N=other_N)),
            f"train on N={h.N} data with config.model.N={other_N}",
        ),
        (
            config.replace(
                model=config.model.replace(gridsize=h.gridsize + 1),
                neighbor_count=max(config.neighbor_count, (h.gridsize + 1) ** 2),
            ),
            f"train on gridsize-{h.gridsize} groups with config.model.gridsize={h.gridsize + 1}",
        ),
    ]
    for bad_config, what in cases:
        recorder = HookRecorder()
        _expect_raises(
            h,
            me,
            lambda bad_config=bad_config, recorder=recorder: h.backend.train(
                data, bad_config, hooks=recorder.relay()
            ),
            ValueError,
            what,
        )
        if recorder.named("epoch_end"):
            raise _fail(
                h, me, f"{what} to fail before the first epoch", "ptycho_epoch_end was called"
            )


@_check("train-deterministic", "§4.1")
def check_train_deterministic(h: BackendHarness) -> None:
    """Two trainings with the same data, config and seed give the same history and the
    same inference output (bit-identical, or equal to float32 round-off)."""
    me = check_train_deterministic
    h.require("deterministic")
    first = h.model
    second_run = h.train()
    second = second_run.result
    if not isinstance(second, TrainedModel):
        raise _fail(h, me, "a TrainedModel from the second training", type(second).__name__)
    a, b = _history_lists(first.history) or {}, _history_lists(second.history) or {}
    if a.keys() != b.keys() or any(
        not np.allclose(a[k], b[k], rtol=_DETERMINISM_RTOL, atol=0, equal_nan=True) for k in a
    ):
        raise _fail(h, me, f"the same history for the same seed ({_short(a)})", _short(b))
    out_a = np.asarray(h.inferred.result)
    out_b = np.asarray(h.infer(second).result)
    if out_a.shape != out_b.shape:
        raise _fail(h, me, f"equal inference output shapes {out_a.shape}", f"{out_b.shape}")
    if not np.array_equal(out_a, out_b):
        scale = float(np.max(np.abs(out_a))) if out_a.size else 0.0
        error = float(np.max(np.abs(out_a - out_b))) if out_a.size else 0.0
        if not error <= _DETERMINISM_RTOL * max(scale, 1e-30):
            raise _fail(
                h,
                me,
                f"the same inference output for the same seed (max difference <= "
                f"{_DETERMINISM_RTOL:g} x max |output| = {_DETERMINISM_RTOL * scale:.3g})",
                f"max difference {error:.3g}",
            )


@_check("infer-output", "§4.2")
def check_infer_output(h: BackendHarness) -> None:
    """``infer`` returns a finite complex64 numpy array of shape (B, N, N, 1)."""
    me = check_infer_output
    out = h.inferred.result
    expected_shape = (len(h.dataset.xcoords), h.N, h.N, 1)
    if type(out) is not np.ndarray:
        raise _fail(h, me, "a numpy.ndarray", f"{type(out).__module__}.{type(out).__qualname__}")
    if out.dtype != np.complex64 or out.shape != expected_shape:
        raise _fail(
            h, me, f"complex64 of shape {expected_shape}", f"{out.dtype} of shape {out.shape}"
        )
    if not np.all(np.isfinite(out)):
        raise _fail(h, me, "finite values", f"{int(np.sum(~np.isfinite(out)))} NaN or inf")


@_check("infer-progress", "§4.2")
def check_infer_progress(h: BackendHarness) -> None:
    """``ptycho_infer_progress`` is called with ``done`` strictly increasing in 1..total,
    ``total`` = B on every call, the last call with ``done == total``."""
    me = check_infer_progress
    total = len(h.dataset.xcoords)
    calls = h.inferred.recorder.named("infer_progress")
    if not calls:
        raise _fail(h, me, "at least one ptycho_infer_progress call", "none")
    pairs = [(c["done"], c["total"]) for c in calls]
    if any(t != total or type(t) is not int or type(d) is not int for d, t in pairs):
        raise _fail(h, me, f"integer done and total={total} on every call", _short(pairs))
    done = [d for d, _ in pairs]
    if any(b <= a for a, b in itertools.pairwise(done)) or done[0] < 1:
        raise _fail(h, me, f"done strictly increasing within 1..{total}", _short(done))
    if done[-1] != total:
        raise _fail(h, me, f"the last call with done == total == {total}", f"done={done[-1]}")
    if h.inferred.recorder.named("train_start") or h.inferred.recorder.named("epoch_end"):
        raise _fail(h, me, "only progress hooks during infer", "training hooks")


@_check("infer-deterministic", "§4.2")
def check_infer_deterministic(h: BackendHarness) -> None:
    """The same model and data give bit-identical ``infer`` output."""
    me = check_infer_deterministic
    first = np.asarray(h.inferred.result)
    second = np.asarray(h.infer(h.model).result)
    if first.shape != second.shape or not np.array_equal(first, second):
        difference = (
            f"max difference {float(np.max(np.abs(first - second))):.3g}"
            if first.shape == second.shape
            else f"shapes {first.shape} and {second.shape}"
        )
        raise _fail(h, me, "bit-identical output from two identical infer calls", difference)


@_check("infer-rejects-wrong-N", "§4.2")
def check_infer_rejects_wrong_n(h: BackendHarness) -> None:
    """``infer`` raises ValueError for data whose pattern size differs from the model's."""
    me = check_infer_rejects_wrong_n
    model = h.model
    groups = h.groups()
    lo, hi = h.N // 4, h.N // 4 + h.N // 2
    small = _groups_with(
        groups,
        diffraction=np.ascontiguousarray(groups.diffraction[:, lo:hi, lo:hi, :]),
        object_patches=None,
    )
    _expect_raises(
        h,
        me,
        lambda: h.backend.infer(model, small, h.inference_config(), hooks=HookRecorder().relay()),
        ValueError,
        f"infer with N={h.N // 2} data on an N={h.N} model",
    )


@_check("infer-rejects-wrong-gridsize", "§4.2")
def check_infer_rejects_wrong_gridsize(h: BackendHarness) -> None:
    """``infer`` raises ValueError for groups with another number of patterns per group."""
    me = check_infer_rejects_wrong_gridsize
    model = h.model
    groups = h.groups()
    C = groups.channels
    other = 4 if C == 1 else 1
    if other > C:
        reps = other // C
        bad = _groups_with(
            groups,
            diffraction=np.ascontiguousarray(np.repeat(groups.diffraction, reps, axis=3)),
            coords_relative=np.ascontiguousarray(np.repeat(groups.coords_relative, reps, axis=3)),
            nn_indices=np.ascontiguousarray(np.repeat(groups.nn_indices, reps, axis=1)),
            object_patches=None,
        )
    else:
        bad = _groups_with(
            groups,
            diffraction=np.ascontiguousarray(groups.diffraction[..., :1]),
            coords_relative=np.ascontiguousarray(groups.coords_relative[..., :1]),
            nn_indices=np.ascontiguousarray(groups.nn_indices[:, :1]),
            object_patches=None,
        )
    _expect_raises(
        h,
        me,
        lambda: h.backend.infer(model, bad, h.inference_config(), hooks=HookRecorder().relay()),
        ValueError,
        f"infer with {other} patterns per group on a gridsize-{h.gridsize} model",
    )


def _foreign(model: TrainedModel) -> TrainedModel:
    return dataclasses.replace(
        model, backend=FOREIGN_BACKEND, config=model.config.replace(backend=FOREIGN_BACKEND)
    )


@_check("infer-rejects-foreign-model", "§4.2")
def check_infer_rejects_foreign_model(h: BackendHarness) -> None:
    """``infer`` raises ValueError for a model whose ``backend`` is another name."""
    me = check_infer_rejects_foreign_model
    foreign = _foreign(h.model)
    _expect_raises(
        h,
        me,
        lambda: h.backend.infer(
            foreign, h.groups(), h.inference_config(), hooks=HookRecorder().relay()
        ),
        ValueError,
        f"infer with a model of backend {FOREIGN_BACKEND!r}",
    )


@_check("inputs-unchanged", "§4")
def check_inputs_unchanged(h: BackendHarness) -> None:
    """``train`` and ``infer`` do not modify the arrays they are given."""
    me = check_inputs_unchanged
    if h.trained.before != h.trained.after:
        raise _fail(h, me, "train to leave its TrainingData unchanged", "modified arrays")
    if h.inferred.before != h.inferred.after:
        raise _fail(
            h, me, "infer to leave its GroupedData and the model's probe unchanged", "modified"
        )


@_check("save-load-round-trip", "§4.4")
def check_save_load_round_trip(h: BackendHarness) -> None:
    """``load(save(model))``, by a fresh backend object, is a TrainedModel of this backend
    whose ``infer`` output is bit-identical to the original model's."""
    me = check_save_load_round_trip
    path = h.bundle
    fresh = h.new_backend()
    loaded = h.call("load", lambda: fresh.load(path), "load(path) to return a TrainedModel")
    if not isinstance(loaded, TrainedModel) or loaded.backend != h.name:
        raise _fail(
            h,
            me,
            f"a TrainedModel of backend {h.name!r}",
            f"{type(loaded).__name__} {getattr(loaded, 'backend', '')!r}",
        )
    original = np.asarray(h.inferred.result)
    again = np.asarray(h.infer(h.model).result)
    if original.shape != again.shape or not np.array_equal(original, again):
        raise CheckSkipped(
            "infer is not deterministic (rule 'infer-deterministic'), so the round trip "
            "cannot be compared bit for bit"
        )
    after = np.asarray(h.infer(loaded).result)
    if after.shape != original.shape or not np.array_equal(after, original):
        difference = (
            f"max difference {float(np.max(np.abs(after - original))):.3g}"
            if after.shape == original.shape
            else f"shape {after.shape} instead of {original.shape}"
        )
        raise _fail(h, me, "bit-identical infer output after save and load", difference)


@_check("bundle-manifest", "§4.3, bundle-format.md §2")
def check_bundle_manifest(h: BackendHarness) -> None:
    """The saved bundle's manifest records the backend, format, N, gridsize, intensity
    scale, config, history and extra of the model, and ``load`` gives them back."""
    me = check_bundle_manifest
    model = h.model
    manifest = read_manifest(h.bundle)
    expected: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backend": h.name,
        "N": h.N,
        "gridsize": h.gridsize,
        "intensity_scale": float(model.intensity_scale),
        "config": model.config.to_dict(),
        "extra": json_value(dict(model.extra), "extra"),
    }
    if h.selected_by_name:
        expected["distribution"] = backend_info(h.name).distribution
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise _fail(h, me, f"manifest {key!r} = {_short(value)}", _short(manifest.get(key)))
    if TrainingConfig.from_dict(manifest["config"]) != model.config:
        raise _fail(h, me, "the manifest config to round-trip to the model's", "another config")
    if not _same_history(
        {k: [math.nan if v is None else v for v in vs] for k, vs in manifest["history"].items()},
        model.history,
    ):
        raise _fail(
            h,
            me,
            f"manifest history = {_short(_history_lists(model.history))}",
            _short(manifest["history"]),
        )
    loaded = h.call(
        "load", lambda: h.new_backend().load(h.bundle), "load(path) to return a TrainedModel"
    )
    checks = {
        "config": loaded.config == model.config,
        "intensity_scale": loaded.intensity_scale == model.intensity_scale,
        "probe": isinstance(loaded.probe, np.ndarray)
        and loaded.probe.dtype == np.complex64
        and np.array_equal(loaded.probe, model.probe),
        "history": _same_history(loaded.history, model.history),
        "extra": json_value(dict(loaded.extra), "extra") == expected["extra"],
    }
    wrong = [key for key, ok in checks.items() if not ok]
    if wrong:
        raise _fail(
            h,
            me,
            "the loaded model's config, intensity_scale, probe, history and extra equal to "
            "the saved model's",
            f"different {', '.join(wrong)}",
        )


@_check("save-rejects-foreign-model", "§4.3")
def check_save_rejects_foreign_model(h: BackendHarness) -> None:
    """``save`` raises ValueError for a model whose ``backend`` is another name, writing
    nothing."""
    me = check_save_rejects_foreign_model
    foreign = _foreign(h.model)
    path = h.tmp / "foreign-model.ptycho"
    _expect_raises(
        h,
        me,
        lambda: h.backend.save(foreign, path),
        ValueError,
        f"save of a model of backend {FOREIGN_BACKEND!r}",
    )
    if path.exists():
        raise _fail(h, me, "no file written by the refused save", f"{path} exists")


@_check("load-rejects-foreign-bundle", "§4.4")
def check_load_rejects_foreign_bundle(h: BackendHarness) -> None:
    """``load`` of a bundle written by another backend raises BackendMismatchError
    naming both backends."""
    me = check_load_rejects_foreign_bundle
    config = h.training_config(backend=FOREIGN_BACKEND)
    data = h.training_data()
    foreign = TrainedModel(
        backend=FOREIGN_BACKEND,
        config=config,
        probe=data.probe,
        intensity_scale=data.intensity_scale,
        network=None,
        history={"loss": [1.0]},
    )
    path = h.tmp / "foreign.ptycho"

    def payload(folder: Path) -> None:
        (folder / "weights.bin").write_bytes(b"not for you")

    write_bundle(path, foreign, payload, framework={})
    _expect_raises(
        h,
        me,
        lambda: h.backend.load(path),
        BackendMismatchError,
        f"load of a bundle written by backend {FOREIGN_BACKEND!r}",
        must_name=(repr(FOREIGN_BACKEND), repr(h.name)),
    )


@_check("load-rejects-corrupt-bundle", "§4.4")
def check_load_rejects_corrupt_bundle(h: BackendHarness) -> None:
    """``load`` raises BundleError for a truncated bundle, a file that is not a bundle
    and a missing file."""
    me = check_load_rejects_corrupt_bundle
    raw = h.bundle.read_bytes()
    truncated = h.tmp / "truncated.ptycho"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbage = h.tmp / "garbage.ptycho"
    garbage.write_bytes(b"this is not a zip archive\n" * 8)
    missing = h.tmp / "missing.ptycho"
    for path, what in (
        (truncated, "a truncated bundle"),
        (garbage, "a file that is not a zip archive"),
        (missing, "a missing file"),
    ):
        _expect_raises(
            h, me, lambda path=path: h.backend.load(path), BundleError, f"load of {what}"
        )


@_check("forward", "§5")
def check_forward(h: BackendHarness) -> None:
    """The optional ``forward(model, diffraction, coords_relative)`` returns a finite
    complex64 array (B, N, N, 1) for one batch."""
    me = check_forward
    forward = getattr(h.backend, "forward", None)
    if forward is None:
        raise CheckSkipped("the backend has no optional 'forward' method")
    groups = h.groups()
    batch = min(_INFER_BATCH, groups.n_groups)
    out = h.call(
        "forward",
        lambda: forward(h.model, groups.diffraction[:batch], groups.coords_relative[:batch]),
        "forward(model, diffraction, coords_relative) to return patches",
    )
    shape = (batch, h.N, h.N, 1)
    if type(out) is not np.ndarray or out.dtype != np.complex64 or out.shape != shape:
        raise _fail(
            h,
            me,
            f"a complex64 numpy array of shape {shape}",
            f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}",
        )
    if not np.all(np.isfinite(out)):
        raise _fail(h, me, "finite values", "NaN or inf")


# ----------------------------------------------------------------------------- optional capabilities


def _warm_start_backend(h: BackendHarness) -> Any:
    if not isinstance(h.backend, SupportsWarmStart):
        raise CheckSkipped("the backend has no optional 'train_from' (SupportsWarmStart, §9.1)")
    return h.backend


def _initial_object_backend(h: BackendHarness) -> Any:
    if not isinstance(h.backend, SupportsInitialObject):
        raise CheckSkipped(
            "the backend has no optional 'infer_from' and 'model_from_probe' "
            "(SupportsInitialObject, §9.2)"
        )
    return h.backend


def _true_start(h: BackendHarness) -> Stitched:
    """The true object as an initial object: cropped, with its origin, rescaled, turned."""
    row, col = _START_CROP
    image = _START_FACTOR * np.asarray(h.dataset.object, dtype=np.complex128)[row:, col:]
    return Stitched(image=image, weight=np.ones(image.shape), origin=(row, col))


def _patch_error(h: BackendHarness, groups: GroupedData, patches: np.ndarray) -> float:
    """Relative squared error of patches against the true object's at the group centres,
    over the central N/2 box, after removing one complex scale (scale and phase are free)."""
    centres = groups.coords_offsets[:, 0, :, 0]
    truth = extract_patches(h.dataset.object, centres[:, 0], centres[:, 1], h.N)
    lo, hi = h.N // 4, 3 * h.N // 4
    found = np.asarray(patches)[:, lo:hi, lo:hi, 0].astype(np.complex128).ravel()
    expected = truth[:, lo:hi, lo:hi].astype(np.complex128).ravel()
    power = float(np.vdot(found, found).real)
    scale = np.vdot(found, expected) / power if power > 0 else 0.0
    return float(np.sum(np.abs(scale * found - expected) ** 2) / np.sum(np.abs(expected) ** 2))


@_check("warm-start", "§9.1")
def check_warm_start(h: BackendHarness) -> None:
    """For a backend with ``train_from``: continuing the trained model on its training data
    returns a new TrainedModel of this backend with the given config, calls the hooks as
    ``train`` does, starts from the trained state (its first epoch's loss is below the first
    epoch's loss of training from scratch) and leaves the input model unchanged (history,
    probe and ``infer`` output). Skipped without ``train_from``."""
    me = check_warm_start
    backend = _warm_start_backend(h)
    model = h.model
    output_before = np.asarray(h.inferred.result)
    history_before = _history_lists(model.history)
    probe_before = np.array(model.probe, copy=True)
    config = h.training_config()
    data = h.training_data(config)
    recorder = HookRecorder()
    refined = h.call(
        "train_from",
        lambda: backend.train_from(model, data, config, hooks=recorder.relay()),
        "train_from(model, data, config, hooks=...) to return a TrainedModel",
    )
    if not isinstance(refined, TrainedModel) or refined is model:
        raise _fail(
            h, me, "a new TrainedModel", f"{type(refined).__name__} (the input: {refined is model})"
        )
    if refined.backend != h.name or refined.config != config:
        raise _fail(
            h,
            me,
            f"backend {h.name!r} and the given config",
            f"{refined.backend!r}, {_short(refined.config)}",
        )
    train, _ = data.split(config.validation_split)
    starts = recorder.named("train_start")
    expected = {"backend": h.name, "config": config, "n_groups": train.n_groups}
    if len(starts) != 1 or recorder.calls[0][0] != "train_start" or starts[0] != expected:
        raise _fail(
            h, me, "ptycho_train_start once, first, as in train", _short(recorder.calls[:1])
        )
    history = _history_lists(refined.history) or {}
    ends = recorder.named("train_end")
    epochs = [args["epoch"] for args in recorder.named("epoch_end")]
    if (
        not epochs
        or epochs != list(range(len(epochs)))
        or len(history.get("loss", [])) != len(epochs)
        or len(ends) != 1
        or recorder.calls[-1][0] != "train_end"
        or not _same_history(ends[0]["history"], refined.history)
    ):
        raise _fail(
            h,
            me,
            "ptycho_epoch_end once per epoch from 0 and ptycho_train_end last with the "
            "returned history, as in train",
            f"epochs {epochs}, history {_short(history)}",
        )
    fresh = (_history_lists(model.history) or {}).get("loss", [math.inf])
    if not history["loss"][0] < fresh[0]:
        raise _fail(
            h,
            me,
            f"a first epoch's loss below {fresh[0]:.6g}, the first epoch's of training from "
            "scratch (a warm start continues from the trained model)",
            f"{history['loss'][0]:.6g}",
        )
    output_after = np.asarray(h.infer(model).result)
    # infer's own determinism is another rule: allow the tolerance of train-deterministic
    tolerance = _DETERMINISM_RTOL * float(np.max(np.abs(output_before), initial=1e-30))
    if _history_lists(model.history) != history_before:
        raise _fail(h, me, "the input model's history unchanged", _short(model.history))
    if not np.array_equal(model.probe, probe_before):
        raise _fail(h, me, "the input model's probe unchanged", "another probe")
    if output_after.shape != output_before.shape or not np.allclose(
        output_after, output_before, rtol=0, atol=tolerance
    ):
        raise _fail(
            h, me, "the input model's infer output unchanged (its weights untouched)", "it changed"
        )


@_check("warm-start-rejects-mismatch", "§9.1")
def check_warm_start_rejects_mismatch(h: BackendHarness) -> None:
    """``train_from`` raises ValueError before the first epoch for a config of another
    architecture (``model`` differs) and for a model of another backend. Skipped without
    ``train_from``."""
    me = check_warm_start_rejects_mismatch
    backend = _warm_start_backend(h)
    config = h.training_config()
    data = h.training_data(config)
    wider = config.model.n_filters_scale + 1
    cases = [
        (
            h.model,
            config.replace(model=config.model.replace(n_filters_scale=wider)),
            f"train_from with config.model.n_filters_scale={wider} on a model of "
            f"n_filters_scale {config.model.n_filters_scale}",
        ),
        (_foreign(h.model), config, f"train_from with a model of backend {FOREIGN_BACKEND!r}"),
    ]
    for model, bad_config, what in cases:
        recorder = HookRecorder()
        _expect_raises(
            h,
            me,
            lambda model=model, bad_config=bad_config, recorder=recorder: backend.train_from(
                model, data, bad_config, hooks=recorder.relay()
            ),
            ValueError,
            what,
        )
        if recorder.named("epoch_end"):
            raise _fail(
                h, me, f"{what} to fail before the first epoch", "ptycho_epoch_end was called"
            )


@_check("infer-from", "§9.2")
def check_infer_from(h: BackendHarness) -> None:
    """For a backend with ``infer_from`` and ``model_from_probe``: ``model_from_probe`` gives
    a model of this backend with the given probe; ``infer_from`` returns finite complex64
    (B, N, N, 1) patches, reports progress up to B and leaves the initial object unchanged;
    it uses the object: started from the true object (cropped, with an origin, rescaled and
    phase-shifted) its patches are at least as close to the truth as those of ``infer`` (the
    flat start) after the same iterations, and differ from them. Skipped without the
    capability."""
    me = check_infer_from
    backend = _initial_object_backend(h)
    config = h.training_config()
    probe = h.training_data(config).probe
    model = h.call(
        "model_from_probe",
        lambda: backend.model_from_probe(probe, config),
        "model_from_probe(probe, config) to return a TrainedModel",
    )
    if not isinstance(model, TrainedModel) or model.backend != h.name:
        raise _fail(
            h,
            me,
            f"model_from_probe to return a TrainedModel of backend {h.name!r}",
            f"{type(model).__name__} {getattr(model, 'backend', '')!r}",
        )
    if not np.array_equal(model.probe, probe):
        raise _fail(h, me, "model_from_probe to keep the probe it was given", "another probe")
    start = _true_start(h)
    before = _fingerprint(start.image, start.weight, np.asarray(start.origin))
    groups = h.groups()
    recorder = HookRecorder()
    out = h.call(
        "infer_from",
        lambda: backend.infer_from(
            model, groups, h.inference_config(), start, hooks=recorder.relay()
        ),
        "infer_from(model, data, config, initial_object, hooks=...) to return patches",
    )
    shape = (groups.n_groups, h.N, h.N, 1)
    if type(out) is not np.ndarray or out.dtype != np.complex64 or out.shape != shape:
        raise _fail(
            h,
            me,
            f"a complex64 numpy array of shape {shape}",
            f"{type(out).__name__} {getattr(out, 'dtype', '?')} {getattr(out, 'shape', '?')}",
        )
    if not np.all(np.isfinite(out)):
        raise _fail(h, me, "finite values", "NaN or inf")
    done = [args["done"] for args in recorder.named("infer_progress")]
    if not done or done[-1] != groups.n_groups:
        raise _fail(h, me, f"ptycho_infer_progress ending at done={groups.n_groups}", f"{done}")
    if _fingerprint(start.image, start.weight, np.asarray(start.origin)) != before:
        raise _fail(h, me, "the initial object unchanged", "modified")
    flat = np.asarray(h.infer(model, groups).result)
    error_from, error_flat = _patch_error(h, groups, out), _patch_error(h, groups, flat)
    if not error_from <= error_flat:
        raise _fail(
            h,
            me,
            f"patches started from the true object at least as close to it as the flat "
            f"start's (relative error {error_flat:.4g})",
            f"relative error {error_from:.4g}",
        )
    if np.array_equal(out, flat):
        raise _fail(
            h, me, "patches that differ from infer's (the initial object is used)", "identical"
        )


@_check("infer-from-rejects-foreign-model", "§9.2")
def check_infer_from_rejects_foreign_model(h: BackendHarness) -> None:
    """``infer_from`` raises ValueError for a model whose ``backend`` is another name.
    Skipped without the capability."""
    me = check_infer_from_rejects_foreign_model
    backend = _initial_object_backend(h)
    foreign = _foreign(h.model)
    _expect_raises(
        h,
        me,
        lambda: backend.infer_from(
            foreign, h.groups(), h.inference_config(), _true_start(h), hooks=HookRecorder().relay()
        ),
        ValueError,
        f"infer_from with a model of backend {FOREIGN_BACKEND!r}",
    )


CHECKS: tuple[Callable[[BackendHarness], None], ...] = (
    check_protocol,
    check_selection_imports,
    check_train_start_hook,
    check_epoch_end_hook,
    check_train_end_hook,
    check_trained_model,
    check_train_rejects_mismatch,
    check_train_deterministic,
    check_infer_output,
    check_infer_progress,
    check_infer_deterministic,
    check_infer_rejects_wrong_n,
    check_infer_rejects_wrong_gridsize,
    check_infer_rejects_foreign_model,
    check_inputs_unchanged,
    check_save_load_round_trip,
    check_bundle_manifest,
    check_save_rejects_foreign_model,
    check_load_rejects_foreign_bundle,
    check_load_rejects_corrupt_bundle,
    check_forward,
    check_warm_start,
    check_warm_start_rejects_mismatch,
    check_infer_from,
    check_infer_from_rejects_foreign_model,
)
"""Every check, in the order :func:`check_backend` runs them."""


# ----------------------------------------------------------------------------- running


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """The outcome of one check."""

    check: str
    """Function name, e.g. ``'check_infer_output'``."""
    rule: str
    """Rule name, e.g. ``'infer-output'``."""
    status: str
    """``'passed'``, ``'failed'`` or ``'skipped'``."""
    message: str = ""
    """Why it failed or was skipped."""
    seconds: float = 0.0
    """Time the check took (including artefacts it was the first to need)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ConformanceReport:
    """All check results for one backend."""

    backend: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not fail)."""
        return not self.failures

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def skipped(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status == "skipped")

    def raise_if_failed(self) -> None:
        """Raise a ConformanceError listing every failed check."""
        if self.failures:
            lines = "\n".join(f"  {r.check}: {r.message}" for r in self.failures)
            raise ConformanceError(
                ", ".join(r.rule for r in self.failures),
                "every check to pass",
                f"{len(self.failures)} failed:\n{lines}",
                backend=self.backend,
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "passed": self.passed,
            "results": [r.to_dict() for r in self.results],
        }

    def __str__(self) -> str:
        width = max((len(r.check) for r in self.results), default=0)
        lines = [f"conformance of backend {self.backend!r}:"]
        for r in self.results:
            note = f"  {r.message}" if r.message else ""
            lines.append(f"  {r.status.upper():<7} {r.check:<{width}} {r.seconds:6.2f}s{note}")
        counts = {
            s: sum(r.status == s for r in self.results) for s in ("passed", "failed", "skipped")
        }
        lines.append(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        )
        return "\n".join(lines)


def _select_checks(
    checks: Iterable[str | Callable[[BackendHarness], None]] | None,
) -> tuple[Callable[[BackendHarness], None], ...]:
    if checks is None:
        return CHECKS
    by_name: dict[str, Callable[[BackendHarness], None]] = {}
    for check in CHECKS:
        by_name[check.__name__] = check
        by_name[check.rule] = check  # type: ignore[attr-defined]
        by_name[check.__name__.removeprefix("check_")] = check
    chosen = []
    for item in checks:
        if callable(item):
            chosen.append(item)
        elif item in by_name:
            chosen.append(by_name[item])
        else:
            raise ValueError(
                f"check_backend: unknown check {item!r}; known checks: "
                f"{', '.join(c.__name__ for c in CHECKS)}"
            )
    return tuple(chosen)


def run_check(harness: BackendHarness, check: Callable[[BackendHarness], None]) -> CheckResult:
    """Run one check and return its result (never raises for a backend's fault)."""
    rule = getattr(check, "rule", check.__name__)
    start = time.perf_counter()
    try:
        check(harness)
    except CheckSkipped as skip:
        status, message = "skipped", str(skip)
    except ConformanceError as error:
        status, message = "failed", str(error)
    except Exception as error:
        status = "failed"
        message = (
            f"backend {harness.name!r}: check {check.__name__} raised "
            f"{type(error).__name__}: {error}"
        )
    else:
        status, message = "passed", ""
    return CheckResult(
        check=check.__name__,
        rule=rule,
        status=status,
        message=message,
        seconds=time.perf_counter() - start,
    )


def check_backend(
    name_or_class: str | type | object,
    *,
    N: int = _DEFAULT_N,
    gridsize: int = _DEFAULT_GRIDSIZE,
    tmp_dir: str | os.PathLike[str] | None = None,
    checks: Iterable[str | Callable[[BackendHarness], None]] | None = None,
) -> ConformanceReport:
    """Run the conformance checks on a backend and return the report.

    ``name_or_class``: an entry point name (selected as users select it), a backend
    class or an instance. ``checks``: names (``'check_infer_output'``, the rule
    ``'infer-output'`` or ``'infer_output'``) or functions; all by default. Bundles go
    to ``tmp_dir`` (kept) or to a temporary folder (deleted). Call
    :meth:`ConformanceReport.raise_if_failed` to turn failures into an error.
    """
    selected = _select_checks(checks)
    harness = BackendHarness(name_or_class, N=N, gridsize=gridsize, tmp_dir=tmp_dir)
    try:
        results = tuple(run_check(harness, check) for check in selected)
    finally:
        harness.close()
    return ConformanceReport(backend=harness.name, results=results)


def backend_checks(
    backend: str | type | object,
    *,
    N: int = _DEFAULT_N,
    gridsize: int = _DEFAULT_GRIDSIZE,
    checks: Iterable[str | Callable[[BackendHarness], None]] | None = None,
) -> Iterator[tuple[BackendHarness, Callable[[BackendHarness], None]]]:
    """(harness, check) pairs for one backend; the harness is shared, so the artefacts
    (training, inference, bundle) are computed once, by the first check that needs them.
    Call ``check(harness)``: it raises ConformanceError or CheckSkipped."""
    harness = BackendHarness(backend, N=N, gridsize=gridsize)
    for check in _select_checks(checks):
        yield harness, check


class _PytestCheck:
    """A check that turns CheckSkipped into pytest.skip (so a skip shows its reason)."""

    def __init__(self, check: Callable[[BackendHarness], None]) -> None:
        self.check = check
        self.__name__ = check.__name__
        self.rule = getattr(check, "rule", check.__name__)

    def __call__(self, harness: BackendHarness) -> None:
        import pytest

        try:
            self.check(harness)
        except CheckSkipped as skip:
            pytest.skip(str(skip))

    def __repr__(self) -> str:
        return self.__name__


def parametrize_with_checks(
    backends: Sequence[str | type | object],
    *,
    N: int = _DEFAULT_N,
    gridsize: int = _DEFAULT_GRIDSIZE,
    checks: Iterable[str | Callable[[BackendHarness], None]] | None = None,
) -> Any:
    """A ``pytest.mark.parametrize`` over (backend, check) with ids ``NAME-check_x``.

    ::

        @parametrize_with_checks(["epie"])
        def test_conformance(backend, check):
            check(backend)

    ``pytest -k infer_output`` then runs one check. Backends are selected lazily, when
    the first check runs.
    """
    import pytest

    selected = _select_checks(checks)
    params = []
    for backend in backends:
        for harness, check in backend_checks(backend, N=N, gridsize=gridsize, checks=selected):
            params.append(
                pytest.param(harness, _PytestCheck(check), id=f"{harness.name}-{check.__name__}")
            )
    return pytest.mark.parametrize(("backend", "check"), params)

"""Running a backend under test: the harness whose artefacts the checks share, and the
hook recorder that watches every call."""

from __future__ import annotations

import inspect
import os
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core.architecture import initial_arrays
from ptycho_core.backend_selector import select_backend
from ptycho_core.config import SUPPORTED_N, InferenceConfig, TrainingConfig
from ptycho_core.grouping import GroupedData
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import (
    KNOWN_CAPABILITIES,
    TrainedModel,
    TrainingData,
    declared_capabilities,
)
from ptycho_core.testing import data
from ptycho_core.testing.errors import CheckSkipped, ConformanceError

__all__ = ["KNOWN_CAPABILITIES", "BackendHarness", "Check", "HookRecorder", "Run"]


# The spec section of each backend method, for the rule '<method>-runs' its exception breaks.
_METHOD_SECTIONS: Mapping[str, str] = {
    "train": "§4.1",
    "infer": "§4.2",
    "save": "§4.3",
    "load": "§4.4",
    "import_arrays": "§8",
    "train_from": "§9.1",
    "infer_from": "§9.2",
    "model_from_probe": "§9.2",
}


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
class Run:
    """One call of train or infer: its result, the hook calls and the input fingerprints."""

    result: Any
    """What the backend returned."""
    recorder: HookRecorder
    """The hook calls made during the call."""
    before: str
    """Fingerprint of the inputs before the call."""
    after: str
    """Fingerprint of the inputs after the call (equal when nothing was modified)."""
    seconds: float
    """Wall time of the call."""


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
        N: int = data.DEFAULT_N,
        gridsize: int = data.DEFAULT_GRIDSIZE,
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
        self._dataset = _Lazy(lambda: data.simulated_dataset(self.N))
        self._trained = _Lazy(self._train_main)
        self._imported = _Lazy(self._import_main)
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
        return declared_capabilities(self.backend)

    def require(self, capability: str) -> None:
        """Skip the calling check when the backend declares ``capability`` False."""
        if not self.capabilities.get(capability, True):
            raise CheckSkipped(f"backend declares capabilities[{capability!r}] = False")

    def require_gridsize(self) -> None:
        if self.gridsize > 1:
            self.require("gridsize_gt_1")

    # -- data and configs

    @property
    def dataset(self) -> Any:
        """The simulated :class:`~ptycho_core.data.PtychoData` every check uses."""
        return self._dataset.get()

    def training_config(self, **changes: Any) -> TrainingConfig:
        return data.training_config(self.name, self.N, self.gridsize, **changes)

    def inference_config(self, **changes: Any) -> InferenceConfig:
        return data.inference_config(self.name, **changes)

    def training_data(self, config: TrainingConfig | None = None) -> TrainingData:
        """Fresh training data (new arrays on every call)."""
        return data.training_data(self.dataset, config or self.training_config())

    def groups(self) -> GroupedData:
        """Fresh inference groups (new arrays on every call), one per position."""
        return data.inference_groups(self.dataset, self.gridsize)

    # -- runs

    def train(self, config: TrainingConfig | None = None) -> Run:
        """Train on fresh data; record the hook calls and fingerprint the inputs.

        Skips the calling check for a backend that declares ``capabilities['trains']``
        False (it runs models made elsewhere)."""
        self.require("trains")
        config = config or self.training_config()
        given = self.training_data(config)
        recorder = HookRecorder()
        before = _training_fingerprint(given)
        start = time.perf_counter()
        model = self.call(
            "train",
            lambda: self.backend.train(given, config, hooks=recorder.relay()),
            "train(data, config, hooks=...) to return a TrainedModel",
        )
        seconds = time.perf_counter() - start
        return Run(model, recorder, before, _training_fingerprint(given), seconds)

    def infer(self, model: TrainedModel, groups: GroupedData | None = None) -> Run:
        """Infer on fresh groups; record the hook calls and fingerprint the inputs."""
        groups = self.groups() if groups is None else groups
        recorder = HookRecorder()
        before = data.groups_fingerprint(groups) + data.fingerprint(model.probe)
        start = time.perf_counter()
        out = self.call(
            "infer",
            lambda: self.backend.infer(
                model, groups, self.inference_config(), hooks=recorder.relay()
            ),
            "infer(model, data, config, hooks=...) to return the object patches",
        )
        seconds = time.perf_counter() - start
        after = data.groups_fingerprint(groups) + data.fingerprint(model.probe)
        return Run(out, recorder, before, after, seconds)

    def _train_main(self) -> Run:
        self.require_gridsize()
        return self.train()

    def _import_main(self) -> TrainedModel:
        """The model of a backend that does not train: new-network weights of the harness's
        architecture (:func:`~ptycho_core.architecture.initial_arrays`), imported."""
        self.require_gridsize()
        config = self.training_config()
        given = self.training_data(config)
        importer = getattr(self.backend, "import_arrays", None)
        if not callable(importer):
            raise self.error(
                "trains",
                "a backend declaring capabilities['trains'] = False to make its models with "
                "import_arrays (framework-neutral weights)",
                "no import_arrays method",
                "§8",
            )
        arrays = initial_arrays(config.model, given.probe, given.intensity_scale, seed=config.seed)
        model = self.call(
            "import_arrays",
            lambda: importer(
                arrays, config=config, probe=given.probe, intensity_scale=given.intensity_scale
            ),
            "import_arrays(arrays, config=..., probe=..., intensity_scale=...) to return a "
            "TrainedModel",
        )
        if not isinstance(model, TrainedModel):
            raise self.error(
                "trained-model",
                "import_arrays to return a ptycho_core.protocol.TrainedModel",
                f"{type(model).__name__}",
                "§8",
            )
        return model

    def _infer_main(self) -> Run:
        return self.infer(self.model)

    def _save_main(self) -> Path:
        path = self.tmp / "model.ptycho"
        self.call(
            "save", lambda: self.backend.save(self.model, path), "save(model, path) to succeed"
        )
        return path

    @property
    def trained(self) -> Run:
        """The main training run (computed once)."""
        return self._trained.get()

    @property
    def model(self) -> TrainedModel:
        """The main model: trained, or imported for a backend that does not train."""
        if not self.capabilities.get("trains", True):
            return self._imported.get()
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
    def inferred(self) -> Run:
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


def _training_fingerprint(given: TrainingData) -> str:
    """Fingerprint of everything ``train`` is given: the probe, the scale and the groups."""
    return data.fingerprint(
        given.probe, np.float64(given.intensity_scale)
    ) + data.groups_fingerprint(given.groups)


Check = Callable[[BackendHarness], None]
"""A check: a function of the harness that returns, raises ConformanceError or CheckSkipped."""

"""pty-chi's engines behind ptycho's backend protocol: 'ptychi-lsqml', 'ptychi-rpie', 'ptychi-dm'.

``train`` runs the engine on the training scan from a flat object and keeps what carries
over to another scan of the same instrument:

- the probe, refined by the engine's probe update when ``config.probe_trainable`` is
  true (and grown into ``probe_modes`` incoherent modes), starting from the normalised
  probe P̃ scaled to the data's energy;
- the iteration count ``config.nepochs`` and the minibatch (``config.batch_size``): a
  flat start on a new scan needs the whole budget even when early stopping ended the
  training run sooner (early stopping only ends the probe's refinement);
- the engine's settings (the backend options below), so inference runs as training did.

``infer`` runs that many iterations (or ``InferenceConfig.iterations``) of the same
engine on the data it is given, with the trained probe fixed, from a flat object
(``infer``) or from a given one (``infer_from``), and returns the object at the group
centres. ``model_from_probe`` makes a model from a probe with no training, so a network
bundle can hand over to pty-chi directly (``ptycho infer NET --then ptychi-lsqml``).

pty-chi runs inside :func:`ptycho_ptychi.runtime.isolated`: torch's defaults and the
global random generators are the same after a call as before it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ptycho_core.backend_options import (
    BackendOption,
    boolean,
    int_in,
    one_of,
    real_in,
    resolve_backend_options,
)
from ptycho_core.bundle import read_bundle, read_payload_json, write_bundle
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.errors import BundleError, ConfigError
from ptycho_core.geometry import extract_patches
from ptycho_core.grouping import GroupedData
from ptycho_core.iterative import (
    OneReconstructionPath,
    Patterns,
    place_on_canvas,
    refuse_network_settings,
    unique_patterns,
    untrained_model,
)
from ptycho_core.limits import MAX_ITERATIONS
from ptycho_core.npz import open_npz
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.stitching import Stitched, patches_restoring
from ptycho_ptychi import __version__, engines
from ptycho_ptychi.engines import ENGINES, Canvas, Engine, Run

__all__ = [
    "PAYLOAD_ARRAYS",
    "PAYLOAD_SETTINGS",
    "DmBackend",
    "LsqmlBackend",
    "PtychiBackend",
    "PtychiState",
    "RpieBackend",
]

PAYLOAD_ARRAYS = "ptychi.npz"
PAYLOAD_SETTINGS = "ptychi.json"
PAYLOAD_VERSION = 1
MAX_PROBE_MODES = 8
COVERED_FRACTION = 0.99
"""``infer_from`` fits the object's scale on the patterns whose probe intensity the initial
object covers at least this much."""
_SETTINGS_MAX_BYTES = 64 * 1024

_COMMON_TRAINING: tuple[BackendOption, ...] = (
    BackendOption(
        "probe_modes",
        "incoherent probe modes trained (mixed-state probe); 1: a pure probe",
        int_in(1, MAX_PROBE_MODES),
        default=1,
    ),
    BackendOption(
        "position_correction",
        "correct the training scan's positions while training",
        boolean,
        default=False,
    ),
    BackendOption(
        "double_precision", "run pty-chi in float64 instead of float32", boolean, default=False
    ),
)


def _inference_options(probe_correction: bool) -> tuple[BackendOption, ...]:
    """Inference options; LSQML refines the probe by default (its probe step is a solved
    least-squares step, stable from any start), rPIE and DM keep it fixed by default (their
    probe steps can pull a good starting object away in the first iterations)."""
    return (
        BackendOption(
            "probe_correction",
            "refine the trained probe on the data being reconstructed",
            boolean,
            default=probe_correction,
        ),
        BackendOption(
            "position_correction",
            "correct the scan's positions while reconstructing",
            boolean,
            default=False,
        ),
        BackendOption(
            "double_precision",
            "run pty-chi in float64 instead of float32",
            boolean,
            default=False,
        ),
    )


_ENGINE_OPTIONS: Mapping[str, tuple[BackendOption, ...]] = {
    "lsqml": (
        BackendOption(
            "noise_model",
            "LSQML's likelihood: 'gaussian' or 'poisson'",
            one_of(("gaussian", "poisson")),
            default="gaussian",
        ),
    ),
    "rpie": (
        BackendOption(
            "alpha",
            "rPIE regularisation of the object and probe updates",
            real_in(0.0, 1.0),
            default=0.1,
        ),
    ),
    "dm": (
        BackendOption(
            "exit_wave_relaxation",
            "DM's exit-wave update relaxation",
            real_in(0.0, 1.0, low_open=True),
            default=1.0,
        ),
    ),
}


@dataclass(frozen=True, eq=False, kw_only=True)
class PtychiState:
    """What training kept (``TrainedModel.network`` of a pty-chi model)."""

    engine: str
    """Engine key ('lsqml', 'rpie', 'dm')."""
    probe: np.ndarray
    """(modes, N, N) complex64 probe, on the scale of ``N·X`` (normalised data × N)."""
    iterations: int
    """Iterations ``infer`` runs."""
    batch_size: int
    """Patterns per pty-chi minibatch."""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The engine's own settings (backend options) used in training, JSON scalars."""

    def manifest_extra(self, *, probe_refined: bool) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "probe_modes": int(self.probe.shape[0]),
            "probe_refined": probe_refined,
            "settings": dict(self.settings),
        }


def _device(backend: str, accelerator: str, where: str) -> bool:
    """True for the GPU. 'auto' uses one when torch sees one; 'gpu' without one is an error
    (never a silent fall back to the CPU)."""
    import torch

    available = torch.cuda.is_available()
    if accelerator == "gpu" and not available:
        raise ConfigError(
            f"{backend}: {where}.accelerator='gpu' but torch sees no GPU "
            f"(torch {torch.__version__}); use 'cpu' or 'auto', or install a CUDA build of torch"
        )
    return accelerator == "gpu" or (accelerator == "auto" and available)


def _check_runtime(backend: str, config: TrainingConfig | InferenceConfig, where: str) -> bool:
    """Refuse what pty-chi cannot do here; return whether to use the GPU."""
    if config.precision != "32":
        raise ConfigError(
            f"{backend}: {where}.precision={config.precision!r} is not supported; pty-chi runs "
            "in float32 ('32'), or in float64 with the backend option double_precision=true"
        )
    if config.devices not in (1, "auto"):
        raise ConfigError(
            f"{backend}: {where}.devices={config.devices!r} is not supported; this backend "
            "runs pty-chi on one device (1 or 'auto')"
        )
    if isinstance(config, TrainingConfig):
        for name, allowed in (("strategy", "auto"), ("num_nodes", 1)):
            if getattr(config, name) != allowed:
                raise ConfigError(
                    f"{backend}: TrainingConfig.{name}={getattr(config, name)!r} is not "
                    f"supported; expected {allowed!r} (one process)"
                )
    return _device(backend, config.accelerator, where)


def _phase_turn(image: np.ndarray, covered: np.ndarray) -> complex:
    """The unit factor that turns the mean phase of ``image``'s covered pixels to 0."""
    total = complex(np.sum(image[covered], dtype=np.complex128))
    return np.conj(total) / abs(total) if abs(total) > 0 else 1.0


class PtychiBackend(OneReconstructionPath):
    """A pty-chi engine as a ptycho backend; subclasses pick the engine."""

    engine_key: str
    name: str
    description: str
    capabilities: Mapping[str, bool] = MappingProxyType(
        {"deterministic": True, "gridsize_gt_1": True}
    )
    training_options: tuple[BackendOption, ...] = ()
    inference_options: tuple[BackendOption, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """An engine's backend: its name and its declared options follow from its key."""
        super().__init_subclass__(**kwargs)
        cls.name = f"ptychi-{cls.engine_key}"
        cls.training_options = _COMMON_TRAINING + _ENGINE_OPTIONS[cls.engine_key]
        cls.inference_options = _inference_options(probe_correction=cls.engine_key == "lsqml")

    @property
    def engine(self) -> Engine:
        return ENGINES[self.engine_key]

    # ------------------------------------------------------------------ train

    def _training_run(self, config: TrainingConfig) -> tuple[Run, dict[str, Any]]:
        options = resolve_backend_options(
            self.name,
            config.backend_options,
            self.training_options,
            field="TrainingConfig.backend_options",
        )
        refuse_network_settings(self.name, config, f"pty-chi {self.engine.label}")
        gpu = _check_runtime(self.name, config, "TrainingConfig")
        settings = {o.name: options[o.name] for o in _ENGINE_OPTIONS[self.engine_key]}
        run = Run(
            engine=self.engine,
            settings=settings,
            epochs=config.nepochs,
            batch_size=config.batch_size,
            seed=config.seed,
            gpu=gpu,
            double=bool(options["double_precision"]),
            probe_modes=int(options["probe_modes"]),
            refine_probe=bool(config.probe_trainable),
            refine_positions=bool(options["position_correction"]),
        )
        return run, settings

    def train(self, data: TrainingData, config: TrainingConfig, *, hooks: Any) -> TrainedModel:
        run, settings = self._training_run(config)
        data.check_fits(config, self.name)
        train, validation = data.split(config.validation_split)
        hooks.ptycho_train_start(backend=self.name, config=config, n_groups=train.n_groups)

        patterns = unique_patterns(train.groups)
        amplitudes = engines.measured(patterns)
        canvas = engines.make_canvas(patterns, data.N)
        held_out = None
        if validation is not None:
            held_out = unique_patterns(validation.groups)
            held_out_amplitudes = engines.measured(held_out)
            val_canvas = _covering(canvas, held_out, data.N)
        probe = engines.initial_probe(np.asarray(data.probe), run.probe_modes)
        probe = probe * np.complex64(engines.flat_level(amplitudes, probe))
        obj = np.ones(canvas.shape, dtype=np.complex64)

        history: dict[str, list[float]] = {"loss": []}
        if held_out is not None:
            history["val_loss"] = []
        best = math.inf
        stale = 0

        def on_epoch(epoch: int, loss: float, snapshot: Callable[[], engines.Snapshot]) -> bool:
            nonlocal best, stale
            losses = {"loss": loss}
            if held_out is not None:
                current, modes = snapshot()
                losses["val_loss"] = engines.misfit(
                    _resize(current, canvas, val_canvas),
                    modes,
                    val_canvas,
                    held_out,
                    held_out_amplitudes,
                )
            for key, value in losses.items():
                history[key].append(float(value))
            hooks.ptycho_epoch_end(epoch=epoch, nepochs=config.nepochs, losses=losses)
            if loss < best:
                best, stale = loss, 0
                return False
            stale += 1
            return stale >= config.early_stop_patience

        _, probe, _ = engines.solve(run, canvas, patterns, amplitudes, obj, probe, on_epoch)
        if not np.all(np.isfinite(probe)):
            raise ValueError(
                f"{self.name}: training diverged (the probe holds NaN or inf); check that the "
                "data are diffraction amplitudes of this probe"
            )
        state = PtychiState(
            engine=self.engine_key,
            probe=probe,
            iterations=config.nepochs,
            batch_size=run.batch_size,
            settings=settings,
        )
        hooks.ptycho_train_end(history=history)
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=np.asarray(data.probe, dtype=np.complex64),
            intensity_scale=float(data.intensity_scale),
            network=state,
            history=history,
            extra=state.manifest_extra(probe_refined=bool(config.probe_trainable)),
        )

    def model_from_probe(self, probe: np.ndarray, config: TrainingConfig) -> TrainedModel:
        """A model for the normalised probe P̃ without training: ``config.nepochs``
        iterations, ``config.batch_size`` patterns per minibatch, the engine's defaults
        (or the training backend options given)."""
        run, settings = self._training_run(config)
        return untrained_model(
            self.name,
            probe,
            config,
            lambda checked: PtychiState(
                engine=self.engine_key,
                probe=engines.initial_probe(checked, run.probe_modes),
                iterations=config.nepochs,
                batch_size=config.batch_size,
                settings=settings,
            ),
            lambda state: state.manifest_extra(probe_refined=False),
        )

    # ------------------------------------------------------------------ infer

    def _reconstruct(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        hooks: Any,
        initial_object: Stitched | None,
    ) -> np.ndarray:
        state = model.payload(self.name, PtychiState)
        options = resolve_backend_options(
            self.name,
            config.backend_options,
            self.inference_options,
            field="InferenceConfig.backend_options",
        )
        model.check_groups(data)
        gpu = _check_runtime(self.name, config, "InferenceConfig")
        iterations = state.iterations if config.iterations is None else config.iterations
        run = Run(
            engine=self.engine,
            settings=state.settings,
            epochs=iterations,
            batch_size=state.batch_size,
            seed=config.seed,
            gpu=gpu,
            double=bool(options["double_precision"]),
            probe_modes=int(state.probe.shape[0]),
            refine_probe=bool(options["probe_correction"]),
            refine_positions=bool(options["position_correction"]),
        )
        total = data.n_groups
        patterns = unique_patterns(data)
        amplitudes = engines.measured(patterns)
        canvas = engines.make_canvas(patterns, data.N)
        level = engines.flat_level(amplitudes, state.probe)
        start = np.full(canvas.shape, level, dtype=np.complex64)
        if initial_object is not None:
            start = self._start_from(initial_object, start, canvas, patterns, amplitudes, state)
        reported = 0

        def on_epoch(epoch: int, loss: float, snapshot: Callable[[], engines.Snapshot]) -> bool:
            nonlocal reported
            del loss, snapshot
            done = min(total - 1, (total * (epoch + 1)) // iterations)
            if done > reported:
                hooks.ptycho_infer_progress(done=done, total=total)
                reported = done
            return False

        obj, _, _ = engines.solve(run, canvas, patterns, amplitudes, start, state.probe, on_epoch)
        centres = data.coords_offsets[:, 0, :, 0]
        rows, cols = canvas.origin
        patches = patches_restoring(
            obj, centres[:, 0] - cols, centres[:, 1] - rows, data.N, M=config.stitch_size
        )
        hooks.ptycho_infer_progress(done=total, total=total)
        return patches[..., None]

    def _start_from(
        self,
        initial: Stitched,
        flat: np.ndarray,
        canvas: Canvas,
        patterns: Patterns,
        amplitudes: np.ndarray,
        state: PtychiState,
    ) -> np.ndarray:
        """``initial`` on the canvas, scaled to the data by least squares over the patterns
        it covers, its global phase turned to 0; the flat start where it does not cover."""
        image, covered = place_on_canvas(initial, canvas.origin, canvas.shape, self.name)
        N = state.probe.shape[-1]
        rows, cols = canvas.origin
        power = np.sum(np.abs(state.probe) ** 2, axis=0)
        windows = extract_patches(
            covered.astype(np.float32), patterns.x - cols, patterns.y - rows, N
        )
        lit = np.sum(windows * power, axis=(1, 2)) / float(np.sum(power))
        fitted = np.flatnonzero(lit >= COVERED_FRACTION)
        if fitted.size == 0:
            raise ValueError(
                f"{self.name}: initial_object (origin {tuple(initial.origin)}, shape "
                f"{np.shape(initial.image)}) covers the illumination of none of the "
                f"{patterns.n} scan positions (canvas origin {canvas.origin}, shape "
                f"{canvas.shape}); it must be in the scan's object-pixel frame"
            )
        model = engines.predicted(
            image, state.probe, canvas, patterns.x[fitted], patterns.y[fitted]
        )
        data = amplitudes[fitted].astype(np.float64)
        denominator = float(np.sum(model**2))
        scale = float(np.sum(model * data)) / denominator if denominator > 0 else 0.0
        if not (math.isfinite(scale) and scale > 0):
            return flat
        factor = scale * _phase_turn(image, covered)
        return np.where(covered, image * np.complex64(factor), flat).astype(np.complex64)

    # ------------------------------------------------------------------ persistence

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        state = model.payload(self.name, PtychiState)

        def write_payload(folder: Path) -> None:
            with open(folder / PAYLOAD_ARRAYS, "wb") as handle:
                np.savez(
                    handle,
                    version=np.int64(PAYLOAD_VERSION),
                    probe=np.asarray(state.probe, dtype=np.complex64),
                    iterations=np.int64(state.iterations),
                    batch_size=np.int64(state.batch_size),
                )
            document = {"engine": state.engine, "settings": dict(state.settings)}
            (folder / PAYLOAD_SETTINGS).write_text(json.dumps(document, sort_keys=True))

        import ptychi
        import torch

        write_bundle(
            path,
            model,
            write_payload,
            framework={
                "torch": torch.__version__,
                "ptychi": getattr(ptychi, "__version__", "unknown"),
                "ptycho-ptychi": __version__,
            },
        )

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        with read_bundle(path, expected_backend=self.name) as contents:
            state = self._read_state(Path(path), contents.payload_dir, contents.N)
            return contents.trained_model(state)

    def _read_state(self, bundle: Path, folder: Path, N: int) -> PtychiState:
        """Read and check the payload: an npz of numbers (never unpickled) and a JSON file."""

        def fail(file: str, message: str) -> BundleError:
            return BundleError(f"bundle {bundle}: payload {file}: {message}")

        settings_file = folder / PAYLOAD_SETTINGS
        arrays_file = folder / PAYLOAD_ARRAYS
        for file in (arrays_file, settings_file):
            if not file.is_file():
                raise fail(file.name, "is missing")
        document = read_payload_json(
            settings_file, _SETTINGS_MAX_BYTES, lambda message: fail(PAYLOAD_SETTINGS, message)
        )
        if not isinstance(document, dict) or set(document) != {"engine", "settings"}:
            raise fail(PAYLOAD_SETTINGS, "expected an object with keys 'engine' and 'settings'")
        if document["engine"] != self.engine_key:
            raise fail(
                PAYLOAD_SETTINGS,
                f"key 'engine': expected {self.engine_key!r}, found {document['engine']!r}",
            )
        settings = document["settings"]
        declared = _ENGINE_OPTIONS[self.engine_key]
        if not isinstance(settings, dict) or set(settings) != {o.name for o in declared}:
            raise fail(
                PAYLOAD_SETTINGS,
                f"key 'settings': expected the settings {sorted(o.name for o in declared)}",
            )
        try:
            settings = resolve_backend_options(
                self.name, settings, declared, field=f"{PAYLOAD_SETTINGS} settings"
            )
        except ConfigError as error:
            raise fail(PAYLOAD_SETTINGS, str(error)) from error

        expected = {"version": (), "probe": None, "iterations": (), "batch_size": ()}
        with open_npz(arrays_file, fail=lambda message: fail(PAYLOAD_ARRAYS, message)) as reader:
            missing = [key for key in expected if key not in reader.keys]
            if missing:
                found = ", ".join(sorted(reader.keys)) or "none"
                raise fail(PAYLOAD_ARRAYS, f"key {missing[0]!r} is missing (found {found})")
            for key, shape in expected.items():  # shapes first: nothing allocated for a lie
                header = reader.header(key)
                ok = (
                    len(header.shape) == 3
                    and 1 <= header.shape[0] <= MAX_PROBE_MODES
                    and header.shape[1:] == (N, N)
                    if shape is None
                    else header.shape == shape
                )
                if not ok:
                    wanted = f"(modes ≤ {MAX_PROBE_MODES}, {N}, {N})" if shape is None else "()"
                    raise fail(
                        PAYLOAD_ARRAYS,
                        f"key {key!r}: expected shape {wanted}, found {header.describe()}",
                    )
            arrays = {key: reader.read(key) for key in expected}
        if int(arrays["version"]) != PAYLOAD_VERSION:
            raise fail(
                PAYLOAD_ARRAYS,
                f"key 'version': expected {PAYLOAD_VERSION}, found {arrays['version']!r}",
            )
        probe = arrays["probe"]
        if probe.dtype != np.complex64 or not np.all(np.isfinite(probe)):
            raise fail(
                PAYLOAD_ARRAYS, f"key 'probe': expected finite complex64, found {probe.dtype}"
            )
        counts: dict[str, int] = {}
        for key, high in (("iterations", MAX_ITERATIONS.value), ("batch_size", 2**16)):
            value = arrays[key]
            if not np.issubdtype(value.dtype, np.integer) or not 1 <= int(value) <= high:
                raise fail(
                    PAYLOAD_ARRAYS,
                    f"key {key!r}: expected an integer in [1, {high}], found {value!r}",
                )
            counts[key] = int(value)
        return PtychiState(
            engine=self.engine_key,
            probe=probe,
            iterations=counts["iterations"],
            batch_size=counts["batch_size"],
            settings=settings,
        )


def _covering(canvas: Canvas, patterns: Patterns, N: int) -> Canvas:
    """A canvas holding both ``canvas`` and every window of ``patterns``."""
    other = engines.make_canvas(patterns, N)
    row0 = min(canvas.origin[0], other.origin[0])
    col0 = min(canvas.origin[1], other.origin[1])
    row1 = max(canvas.origin[0] + canvas.shape[0], other.origin[0] + other.shape[0])
    col1 = max(canvas.origin[1] + canvas.shape[1], other.origin[1] + other.shape[1])
    return Canvas(origin=(row0, col0), shape=(row1 - row0, col1 - col0))


def _resize(obj: np.ndarray, canvas: Canvas, target: Canvas) -> np.ndarray:
    """``obj`` (on ``canvas``) copied onto ``target``, zero outside."""
    out = np.zeros(target.shape, dtype=obj.dtype)
    row = canvas.origin[0] - target.origin[0]
    col = canvas.origin[1] - target.origin[1]
    out[row : row + canvas.shape[0], col : col + canvas.shape[1]] = obj
    return out


class LsqmlBackend(PtychiBackend):
    """pty-chi's LSQML (least-squares maximum likelihood) engine."""

    engine_key = "lsqml"
    description = "pty-chi's least-squares maximum-likelihood solver (fits the probe)"


class RpieBackend(PtychiBackend):
    """pty-chi's rPIE (regularised ptychographic iterative engine)."""

    engine_key = "rpie"
    description = "pty-chi's regularised ptychographic iterative engine (fits the probe)"


class DmBackend(PtychiBackend):
    """pty-chi's difference-map engine."""

    engine_key = "dm"
    description = "pty-chi's difference-map solver (fits the probe)"

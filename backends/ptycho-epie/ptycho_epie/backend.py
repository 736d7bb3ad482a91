"""The 'epie' backend: iterative rPIE reconstruction behind ptycho's backend protocol.

``train`` fits, on the training data, what an iterative solver can carry from one
dataset to the next:

- the step sizes: the rPIE regularisation ``alpha`` and the object momentum, picked
  from :data:`STEP_GRID` by the training Fourier error after a short pilot run of each
  pair (the probe step ``beta`` is fixed, :data:`BETA`);
- the probe, refined by rPIE probe updates when ``config.probe_trainable`` is true,
  starting from the normalised probe P̃;
- the amplitude scale ``gain`` between the normalised data and ``A(O·P̃)``, when
  ``config.intensity_scale_trainable`` is true: X_n ≈ gain·A(O·P), with the object scale
  fixed by the convention that the brightest 0.1 % of the well-lit training object has
  amplitude 1 (a transmission object);
- the iteration count: the epochs training ran (``config.nepochs``, or fewer when early
  stopping on the training loss ended it), and the minibatch (patterns updated
  together: the training ``batch_size``).

``infer`` runs that many rPIE iterations (or ``InferenceConfig.iterations``) on the
diffraction data it is given, with the fitted probe, scale and step sizes fixed, and
returns the reconstructed object at the group centres. There is no network, so there is
no ``forward`` method and ``ptycho bench`` reports null forward figures.

ptycho's optional initial-object capability (specs/backend-protocol.md §9.2):
``infer_from`` runs the same iterations from a given object (e.g. a network's stitched
reconstruction) placed on the scan's canvas, scaled to the data by least squares and
completed with the flat start where it does not cover; ``model_from_probe`` builds a
model for a probe without training (:data:`DEFAULT_STEP`, gain 1), so a network bundle
can hand over to ePIE with no ePIE bundle.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import scipy
import scipy.fft

from ptycho_core.backend_options import BackendOption, resolve_backend_options
from ptycho_core.bundle import read_bundle, write_bundle
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.errors import BundleError, ConfigError
from ptycho_core.grouping import GroupedData
from ptycho_core.iterative import (
    OneReconstructionPath,
    place_on_canvas,
    refuse_network_settings,
    unique_patterns,
    untrained_model,
)
from ptycho_core.limits import MAX_ITERATIONS
from ptycho_core.npz import open_npz
from ptycho_core.physics import probe_disk_mask
from ptycho_core.protocol import TrainedModel, TrainingData
from ptycho_core.stitching import Stitched, patches_restoring
from ptycho_epie import __version__, engine

__all__ = ["BETA", "DEFAULT_STEP", "PAYLOAD_FILE", "STEP_GRID", "EpieBackend", "EpieState"]

STEP_GRID: tuple[tuple[float, float], ...] = tuple(
    (alpha, momentum) for alpha in (0.02, 0.1, 0.5) for momentum in (0.0, 0.5)
)
"""Candidate (rPIE regularisation alpha, object momentum) pairs; train keeps the pair with
the lowest training Fourier error after a pilot run of each."""
DEFAULT_STEP: tuple[float, float] = (0.02, 0.0)
"""(alpha, momentum) of a model built by ``model_from_probe`` (no training to pick a pair):
the pair of :data:`STEP_GRID` whose error after 5 and 20–30 iterations, from the flat start
and from a blurred, noisy, rescaled true object, at 1e4, 1e5 and 1e9 photons per pattern,
was never more than 3.7× that of the best pair for the case (README)."""
COVERED_FRACTION = 0.99
"""``infer_from`` fits the object's scale on the patterns whose probe intensity the initial
object covers at least this much."""
BETA = 1.0
"""rPIE probe step (fixed; the probe update is normalised by the object's intensity)."""
PILOT_ITERATIONS = 6
"""Iterations of each pilot run that chooses the step sizes (at most ``nepochs``)."""
PROBE_DELAY = 1
"""Probe updates start after this many object-only iterations (when the probe is trained)."""
BRIGHT_PERCENTILE = 99.9
"""Percentile of |O| over the well-lit training object that is set to amplitude 1."""
WELL_LIT = 0.5
"""Canvas pixels whose summed probe intensity exceeds this fraction of the maximum."""
WORKERS = -1
"""scipy.fft worker threads (-1: one per CPU)."""
PAYLOAD_FILE = "epie.npz"
PAYLOAD_VERSION = 1
# Cache the shifted probes when they take at most this many complex64 values (128 MiB).
_CACHE_VALUES = 2**24
_CHUNK = 256  # windows handled at once where all of them would not fit in memory


@dataclass(frozen=True, eq=False, kw_only=True)
class EpieState:
    """What training fitted (``TrainedModel.network`` of an 'epie' model)."""

    probe: np.ndarray
    """(N, N) complex64 fitted probe P, normalised like P̃ (probe_scale·mean|mask·P| = 1)."""
    gain: float
    """g in X_n ≈ g·A(O·P): the amplitude scale of the normalised data."""
    alpha: float
    """rPIE regularisation of the object update."""
    momentum: float
    """Heavy-ball momentum of the object across iterations (0: plain rPIE)."""
    beta: float
    """rPIE probe step (used in training only; stored for the record)."""
    iterations: int
    """rPIE iterations run by ``infer``."""
    minibatch: int
    """Patterns updated in parallel per rPIE step (the training ``batch_size``)."""

    def manifest_extra(self, *, probe_refined: bool) -> dict[str, Any]:
        """The fitted scalars as the manifest's ``extra`` records them."""
        return {
            "gain": self.gain,
            "alpha": self.alpha,
            "momentum": self.momentum,
            "beta": self.beta,
            "iterations": self.iterations,
            "minibatch": self.minibatch,
            "probe_refined": probe_refined,
        }


def _check_config(
    name: str, config: TrainingConfig, declared: Sequence[BackendOption] = ()
) -> dict[str, Any]:
    """Refuse settings ePIE cannot honour (the protocol forbids ignoring them silently);
    return the backend options, resolved against ``declared``."""
    options = resolve_backend_options(
        name, config.backend_options, declared, field="TrainingConfig.backend_options"
    )
    refuse_network_settings(name, config, "ePIE")
    supported: Mapping[str, tuple[Any, ...]] = {
        "precision": ("32",),
        "accelerator": ("auto", "cpu"),
        "devices": (1, "auto"),
        "strategy": ("auto",),
        "num_nodes": (1,),
    }
    for field_name, allowed in supported.items():
        value = getattr(config, field_name)
        if value not in allowed:
            raise ConfigError(
                f"{name}: TrainingConfig.{field_name}={value!r} is not supported; ePIE runs "
                f"in single precision on one CPU process ({field_name} must be one of "
                f"{', '.join(map(repr, allowed))})"
            )
    return options


def _patterns(groups: GroupedData) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique patterns of the groups: (dataset index, x, y, N·X_n in FFT order)."""
    patterns = unique_patterns(groups)
    measured = scipy.fft.ifftshift(patterns.amplitude, axes=(-2, -1)) * np.float32(groups.N)
    return patterns.index, patterns.x, patterns.y, np.ascontiguousarray(measured, np.float32)


def _last(steps: Iterator[Any]) -> Any:
    """The last item of an iterator (the state after the last iteration)."""
    last = deque(steps, maxlen=1)
    return last[0]


def _step_key(alpha: float, momentum: float) -> str:
    return f"alpha={alpha:g},momentum={momentum:g}"


def _loss(losses: engine.Losses, config: TrainingConfig) -> float:
    """The PtychoPINN objective, so ePIE's losses compare with the neural backends'."""
    return config.nll_weight * losses.poisson_nll + config.mae_weight * losses.mae


def _well_lit(scan: engine.Scan, probe: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Boolean canvas mask of pixels whose summed probe intensity is ≥ WELL_LIT · max."""
    illumination = engine.illumination(scan, probe, index)
    return illumination >= WELL_LIT * illumination.max()


def _start_from(
    initial: Stitched,
    flat: np.ndarray,
    scan: engine.Scan,
    probe: np.ndarray,
    measured: np.ndarray,
    workers: int,
) -> np.ndarray:
    """The rPIE start from ``initial``: on the canvas, scaled to the data, flat elsewhere.

    The scale is the least-squares amplitude scale over the patterns whose illumination
    the object covers (at least :data:`COVERED_FRACTION` of Σ|P|²); the global phase is
    turned so that the well-lit object's mean phase is 0, the flat start's.
    """
    image, covered = place_on_canvas(initial, scan.origin, scan.shape, "epie")
    power = np.abs(probe) ** 2
    lit = np.empty(scan.n)  # Σ|P|² over the covered pixels of each window
    illumination = np.zeros(scan.shape)
    for start in range(0, scan.n, _CHUNK):
        part = np.arange(start, min(start + _CHUNK, scan.n))
        lit[part] = np.sum(covered.ravel()[scan.flat_indices(part)] * power, axis=(1, 2))
        illumination += engine.illumination(scan, probe, part)
    fitted = np.flatnonzero(lit >= COVERED_FRACTION * float(np.sum(power, dtype=np.float64)))
    if fitted.size == 0:
        raise ValueError(
            f"epie: initial_object (origin {tuple(initial.origin)}, shape "
            f"{np.shape(initial.image)}) covers "
            f"the illumination of none of the {scan.n} scan positions (canvas origin "
            f"{scan.origin}, shape {scan.shape}); it must be in the scan's object-pixel frame"
        )
    scale = engine.amplitude_scale(image, probe, scan, measured, fitted, workers)
    turn = complex(np.sum(image * (illumination * covered), dtype=np.complex128))
    factor = scale * (np.conj(turn) / abs(turn) if abs(turn) > 0 else 1.0)
    return np.where(covered, image * np.complex64(factor), flat).astype(np.complex64)


class EpieBackend(OneReconstructionPath):
    """Iterative rPIE reconstruction with a fitted probe, scale and step size."""

    name = "epie"
    description = "iterative rPIE/ePIE reconstruction in numpy (fits probe, scale and step size)"
    capabilities: Mapping[str, bool] = MappingProxyType(
        {"deterministic": True, "gridsize_gt_1": True}
    )
    training_options: tuple[BackendOption, ...] = ()
    """Backend options of ``train`` and ``model_from_probe``: none, so any is refused."""
    inference_options: tuple[BackendOption, ...] = ()
    """Backend options of ``infer`` and ``infer_from``: none, so any is refused."""

    # ------------------------------------------------------------------ checks

    # ------------------------------------------------------------------ train

    def train(self, data: TrainingData, config: TrainingConfig, *, hooks: Any) -> TrainedModel:
        _check_config(self.name, config, self.training_options)
        data.check_fits(config, self.name)
        N = config.model.N
        train, validation = data.split(config.validation_split)
        hooks.ptycho_train_start(backend=self.name, config=config, n_groups=train.n_groups)

        # Only the training patterns update the object; validation patterns (those of the
        # held-out groups, which for gridsize > 1 may also belong to training groups) are
        # only measured against it.
        ids, x, y, measured = _patterns(train.groups)
        n_train = ids.shape[0]
        train_index = np.arange(n_train)
        val_index = np.arange(0)
        if validation is not None:
            v_ids, vx, vy, v_measured = _patterns(validation.groups)
            new = ~np.isin(v_ids, ids)
            x = np.concatenate([x, vx[new]])
            y = np.concatenate([y, vy[new]])
            measured = np.concatenate([measured, v_measured[new]])
            val_index = np.empty(v_ids.shape[0], dtype=np.int64)
            val_index[new] = n_train + np.arange(int(new.sum()))
            val_index[~new] = np.searchsorted(ids, v_ids[~new])
        scan = engine.make_scan(x, y, N)
        workers = WORKERS
        scale = float(data.intensity_scale) / N
        probe0 = np.asarray(data.probe, dtype=np.complex64)
        obj0 = engine.flat_object(scan, probe0, measured[train_index])
        batch = config.batch_size

        shifted = None
        if scan.n * N * N <= _CACHE_VALUES:
            shifted = engine.shift_images(probe0, scan.frac, workers)

        # step sizes: the (alpha, momentum) pair with the lowest training Fourier error
        # after a short pilot run from the flat start (probe fixed)
        pilot_iterations = min(PILOT_ITERATIONS, config.nepochs)
        pilot_errors: dict[str, float] = {}
        for alpha, momentum in STEP_GRID:
            obj, _, _ = _last(
                engine.rpie(
                    obj0,
                    probe0,
                    scan,
                    measured,
                    train_index,
                    iterations=pilot_iterations,
                    batch_size=batch,
                    rng=np.random.default_rng(config.seed),
                    alpha=alpha,
                    momentum=momentum,
                    workers=workers,
                    shifted_probes=shifted,
                )
            )
            losses = engine.measure(obj, probe0, scan, measured, train_index, scale, workers)
            pilot_errors[_step_key(alpha, momentum)] = losses.fourier_error
        alpha, momentum = min(STEP_GRID, key=lambda step: pilot_errors[_step_key(*step)])

        history: dict[str, list[float]] = {"loss": [], "fourier_error": []}
        if val_index.size:
            history["val_loss"] = []
        obj, probe = obj0, probe0
        best = math.inf
        stale = 0
        epochs_run = 0
        run = engine.rpie(
            obj0,
            probe0,
            scan,
            measured,
            train_index,
            iterations=config.nepochs,
            batch_size=batch,
            rng=np.random.default_rng(config.seed),
            alpha=alpha,
            momentum=momentum,
            beta=BETA,
            refine_probe_from=PROBE_DELAY if config.probe_trainable else None,
            scale=scale,
            workers=workers,
            shifted_probes=shifted,
            measure=True,
        )
        for epoch, (obj, probe, losses) in enumerate(run):
            assert losses is not None
            epoch_losses = {"loss": _loss(losses, config), "fourier_error": losses.fourier_error}
            if val_index.size:
                val = engine.measure(obj, probe, scan, measured, val_index, scale, workers)
                epoch_losses["val_loss"] = _loss(val, config)
            for key, value in epoch_losses.items():
                history[key].append(float(value))
            hooks.ptycho_epoch_end(epoch=epoch, nepochs=config.nepochs, losses=epoch_losses)
            epochs_run = epoch + 1
            if epoch_losses["loss"] < best:
                best, stale = epoch_losses["loss"], 0
            else:
                stale += 1
                if stale >= config.early_stop_patience:
                    break

        state = self._fitted_state(
            obj,
            probe,
            scan,
            train_index,
            config,
            alpha=alpha,
            momentum=momentum,
            iterations=epochs_run,
            minibatch=batch,
        )
        hooks.ptycho_train_end(history=history)
        return TrainedModel(
            backend=self.name,
            config=config,
            probe=probe0,
            intensity_scale=float(data.intensity_scale),
            network=state,
            history=history,
            extra={
                **state.manifest_extra(probe_refined=bool(config.probe_trainable)),
                "pilot_fourier_error": pilot_errors,
            },
        )

    def _fitted_state(
        self,
        obj: np.ndarray,
        probe: np.ndarray,
        scan: engine.Scan,
        index: np.ndarray,
        config: TrainingConfig,
        *,
        alpha: float,
        momentum: float,
        iterations: int,
        minibatch: int,
    ) -> EpieState:
        """Split the reconstructed probe into a normalised probe and the data scale."""
        mask = probe_disk_mask(scan.N)
        level = float(
            config.model.probe_scale * np.mean(np.abs(probe.astype(np.complex128)) * mask)
        )
        if config.intensity_scale_trainable:
            lit = _well_lit(scan, probe, index)
            bright = float(np.percentile(np.abs(obj[lit]), BRIGHT_PERCENTILE))
            gain = level * bright
        else:
            gain = 1.0
        if not (math.isfinite(gain) and gain > 0 and math.isfinite(level) and level > 0):
            raise ValueError(
                f"{self.name}: training diverged (probe level {level!r}, gain {gain!r}); "
                "check that the data are diffraction amplitudes of this probe"
            )
        fitted = (probe.astype(np.complex128) / level).astype(np.complex64)
        return EpieState(
            probe=fitted,
            gain=float(gain),
            alpha=float(alpha),
            momentum=float(momentum),
            beta=BETA,
            iterations=int(iterations),
            minibatch=int(minibatch),
        )

    # ------------------------------------------------------------------ infer

    def model_from_probe(self, probe: np.ndarray, config: TrainingConfig) -> TrainedModel:
        """A model for the normalised probe P̃ without training: :data:`DEFAULT_STEP`, gain 1
        (the object absorbs the data's scale), ``config.nepochs`` iterations,
        ``config.batch_size`` patterns per minibatch."""
        _check_config(self.name, config, self.training_options)
        alpha, momentum = DEFAULT_STEP
        return untrained_model(
            self.name,
            probe,
            config,
            lambda checked: EpieState(
                probe=checked,
                gain=1.0,
                alpha=alpha,
                momentum=momentum,
                beta=BETA,
                iterations=config.nepochs,
                minibatch=config.batch_size,
            ),
            lambda state: state.manifest_extra(probe_refined=False),
        )

    def _reconstruct(
        self,
        model: TrainedModel,
        data: GroupedData,
        config: InferenceConfig,
        hooks: Any,
        initial_object: Stitched | None,
    ) -> np.ndarray:
        """rPIE on the data's patterns with the model's probe, scale and steps: the one path
        of ``infer`` (flat start) and ``infer_from`` (``initial_object``)."""
        state = model.payload(self.name, EpieState)
        model.check_groups(data)
        config.require_single_device(self.name)
        resolve_backend_options(
            self.name,
            config.backend_options,
            self.inference_options,
            field="InferenceConfig.backend_options",
        )
        for field_name, allowed in (("precision", ("32",)), ("accelerator", ("auto", "cpu"))):
            if getattr(config, field_name) not in allowed:
                raise ConfigError(
                    f"{self.name}: InferenceConfig.{field_name}={getattr(config, field_name)!r} "
                    f"is not supported; ePIE runs in single precision on the CPU"
                )
        iterations = state.iterations if config.iterations is None else config.iterations
        total = data.n_groups
        _, x, y, measured = _patterns(data)
        scan = engine.make_scan(x, y, data.N)
        workers = WORKERS
        probe = (state.probe.astype(np.complex128) * state.gain).astype(np.complex64)
        shifted = None
        if scan.n * data.N * data.N <= _CACHE_VALUES:
            shifted = engine.shift_images(probe, scan.frac, workers)
        start = engine.flat_object(scan, probe, measured)
        if initial_object is not None:
            start = _start_from(initial_object, start, scan, probe, measured, workers)
        run = engine.rpie(
            start,
            probe,
            scan,
            measured,
            np.arange(scan.n),
            iterations=iterations,
            batch_size=state.minibatch,
            rng=np.random.default_rng(config.seed),
            alpha=state.alpha,
            momentum=state.momentum,
            workers=workers,
            shifted_probes=shifted,
        )
        reported = 0
        obj = None
        for iteration, (obj, _, _) in enumerate(run):  # noqa: B007  (the last one is kept)
            # progress in groups: the iterations are the work, the final patches the end
            done = min(total - 1, (total * (iteration + 1)) // iterations)
            if done > reported:
                hooks.ptycho_infer_progress(done=done, total=total)
                reported = done
        centres = data.coords_offsets[:, 0, :, 0]
        row0, col0 = scan.origin
        patches = patches_restoring(
            obj, centres[:, 0] - col0, centres[:, 1] - row0, data.N, M=config.stitch_size
        )
        hooks.ptycho_infer_progress(done=total, total=total)
        return patches[..., None]

    # ------------------------------------------------------------------ persistence

    def save(self, model: TrainedModel, path: str | os.PathLike[str]) -> None:
        state = model.payload(self.name, EpieState)

        def write_payload(folder: Path) -> None:
            with open(folder / PAYLOAD_FILE, "wb") as handle:
                np.savez(
                    handle,
                    version=np.int64(PAYLOAD_VERSION),
                    probe=np.asarray(state.probe, dtype=np.complex64),
                    gain=np.float64(state.gain),
                    alpha=np.float64(state.alpha),
                    momentum=np.float64(state.momentum),
                    beta=np.float64(state.beta),
                    iterations=np.int64(state.iterations),
                    minibatch=np.int64(state.minibatch),
                )

        write_bundle(
            path,
            model,
            write_payload,
            framework={
                "numpy": np.__version__,
                "scipy": scipy.__version__,
                "ptycho-epie": __version__,
            },
        )

    def load(self, path: str | os.PathLike[str]) -> TrainedModel:
        with read_bundle(path, expected_backend=self.name) as contents:
            state = _read_state(Path(path), contents.payload_dir / PAYLOAD_FILE, contents.N)
            return contents.trained_model(state)


def _read_state(bundle: Path, file: Path, N: int) -> EpieState:
    """Read and check the payload (numpy arrays only, never unpickled)."""

    def fail(message: str) -> BundleError:
        return BundleError(f"bundle {bundle}: payload {PAYLOAD_FILE}: {message}")

    if not file.is_file():
        raise fail("is missing")
    expected = sorted({f.name for f in fields(EpieState)} | {"version"})
    with open_npz(file, fail=fail) as reader:
        missing = [key for key in expected if key not in reader.keys]
        if missing:
            found = ", ".join(sorted(reader.keys)) or "none"
            raise fail(f"key {missing[0]!r} is missing (found {found})")
        for key in expected:  # shapes first: nothing is allocated for a lying header
            header = reader.header(key)
            shape = (N, N) if key == "probe" else ()
            if header.shape != shape:
                raise fail(f"key {key!r}: expected shape {shape}, found {header.describe()}")
        arrays = {key: reader.read(key) for key in expected}
    if int(arrays["version"]) != PAYLOAD_VERSION:
        raise fail(f"key 'version': expected {PAYLOAD_VERSION}, found {arrays['version']!r}")
    probe = arrays["probe"]
    if probe.dtype != np.complex64 or not np.all(np.isfinite(probe)):
        raise fail(
            f"key 'probe': expected finite complex64 ({N}, {N}), found {probe.dtype} {probe.shape}"
        )
    scalars: dict[str, float] = {}
    for key in ("gain", "alpha", "momentum", "beta", "iterations", "minibatch"):
        value = arrays[key]
        if value.shape != () or not np.issubdtype(value.dtype, np.number):
            raise fail(f"key {key!r}: expected a number, found {value.dtype} {value.shape}")
        number = float(value)
        if (
            not math.isfinite(number)
            or number < 0
            or (key in ("gain", "iterations", "minibatch") and number <= 0)
        ):
            raise fail(f"key {key!r}: expected a finite positive number, found {number!r}")
        scalars[key] = number
    if scalars["iterations"] > MAX_ITERATIONS.value:
        raise fail(f"key 'iterations': {MAX_ITERATIONS.exceeded(scalars['iterations'])}")
    return EpieState(
        probe=probe,
        gain=scalars["gain"],
        alpha=scalars["alpha"],
        momentum=scalars["momentum"],
        beta=scalars["beta"],
        iterations=int(scalars["iterations"]),
        minibatch=int(scalars["minibatch"]),
    )

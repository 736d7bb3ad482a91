"""One pty-chi reconstruction, in ptycho's conventions.

ptycho's model (specs/backend-protocol.md §3.3): pattern k, seen at position (x_k, y_k)
in object pixels, has ``patch[i, j] = object(y_k + i − N/2, x_k + j − N/2)`` and
``M_k = N·X_k ≈ |fft2(P · patch)|`` with X the normalised amplitude, zero frequency at
(N/2, N/2). pty-chi takes intensities with the zero frequency at the centre
(``fft_shift=True``), an unnormalised far-field FFT, and positions whose patch starts at
``position − (N − 1)/2`` on its object buffer. So a canvas whose pixel (0, 0) is object
pixel (row0, col0) gets pty-chi positions ``(y_k − row0 − ½, x_k − col0 − ½)`` with the
position origin fixed at the buffer's pixel (0, 0), and intensities ``M_k²``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptycho_core.geometry import extract_patches
from ptycho_core.iterative import Patterns
from ptycho_ptychi.runtime import import_ptychi, isolated

__all__ = [
    "ENGINES",
    "Canvas",
    "Engine",
    "Run",
    "Snapshot",
    "make_canvas",
    "measured",
    "misfit",
    "solve",
]

_MARGIN = 3  # canvas pixels kept around the outermost windows (pty-chi needs 2)


@dataclass(frozen=True, kw_only=True)
class Engine:
    """A pty-chi engine as a ptycho backend uses it."""

    key: str
    """Short name: the suffix of the backend name ('lsqml')."""
    label: str
    """Name in messages ('LSQML')."""
    options_class: str
    """pty-chi's options class for the engine, in ``ptychi.api``."""
    configure: Callable[[Any, Any, Run], None]
    """Applies the engine's own settings and batching to fresh options: (api, options, run)."""


def _lsqml(api: Any, options: Any, run: Run) -> None:
    noise = {"gaussian": api.NoiseModels.GAUSSIAN, "poisson": api.NoiseModels.POISSON}
    options.reconstructor_options.noise_model = noise[run.settings["noise_model"]]
    options.reconstructor_options.batch_size = run.batch_size


def _rpie(api: Any, options: Any, run: Run) -> None:
    del api
    options.object_options.alpha = float(run.settings["alpha"])
    options.probe_options.alpha = float(run.settings["alpha"])
    options.reconstructor_options.batch_size = run.batch_size


def _dm(api: Any, options: Any, run: Run) -> None:
    """DM updates every position each iteration; the batch size only sets how many exit
    waves are held at once (pty-chi's chunk length, which does not change the result).
    DM records its own error, so no other loss is asked for."""
    del api
    reconstructor = options.reconstructor_options
    reconstructor.exit_wave_update_relaxation = float(run.settings["exit_wave_relaxation"])
    reconstructor.chunk_length = run.batch_size
    reconstructor.displayed_loss_function = None


ENGINES: Mapping[str, Engine] = {
    "lsqml": Engine(key="lsqml", label="LSQML", options_class="LSQMLOptions", configure=_lsqml),
    "rpie": Engine(key="rpie", label="rPIE", options_class="RPIEOptions", configure=_rpie),
    "dm": Engine(key="dm", label="DM", options_class="DMOptions", configure=_dm),
}


@dataclass(frozen=True, kw_only=True)
class Canvas:
    """The object buffer a reconstruction works on."""

    origin: tuple[int, int]
    """Object pixel (row, col) of buffer pixel (0, 0)."""
    shape: tuple[int, int]
    """(H, W) of the buffer."""


def make_canvas(patterns: Patterns, N: int) -> Canvas:
    """The smallest buffer holding every pattern's window, plus a margin."""
    row0 = math.floor(float(patterns.y.min()) - N / 2) - _MARGIN
    col0 = math.floor(float(patterns.x.min()) - N / 2) - _MARGIN
    height = math.ceil(float(patterns.y.max()) + N / 2) - row0 + _MARGIN
    width = math.ceil(float(patterns.x.max()) + N / 2) - col0 + _MARGIN
    return Canvas(origin=(row0, col0), shape=(height, width))


def measured(patterns: Patterns) -> np.ndarray:
    """(n, N, N) float32 ``M = N·X``, centred: the amplitudes the model predicts."""
    N = patterns.amplitude.shape[-1]
    return patterns.amplitude * np.float32(N)


def flat_level(amplitudes: np.ndarray, probe: np.ndarray) -> float:
    """The constant object amplitude whose patterns carry the data's mean energy.

    Parseval: Σ|fft2(c·P)|² = N²·c²·Σ|P|² (summed over probe modes).
    """
    N = amplitudes.shape[-1]
    energy = float(np.mean(np.sum(np.square(amplitudes, dtype=np.float64), axis=(1, 2))))
    probe_energy = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    return math.sqrt(energy / (N**2 * max(probe_energy, 1e-30)))


def predicted(obj: np.ndarray, probe: np.ndarray, canvas: Canvas, x: np.ndarray, y: np.ndarray):
    """(n, N, N) float64 predicted amplitudes √Σ_m|fft2(P_m·patch)|², centred."""
    N = probe.shape[-1]
    rows, cols = canvas.origin
    patches = extract_patches(obj, x - cols, y - rows, N)
    field = np.fft.fft2(patches[:, None, :, :] * probe[None, :, :, :], axes=(-2, -1))
    power = np.sum(np.abs(field) ** 2, axis=1)
    return np.fft.fftshift(np.sqrt(power), axes=(-2, -1))


def misfit(
    obj: np.ndarray, probe: np.ndarray, canvas: Canvas, patterns: Patterns, amplitudes: np.ndarray
) -> float:
    """mean (|Ψ| − M)² / mean M²: pty-chi's displayed loss, relative to the data's power."""
    model = predicted(obj, probe, canvas, patterns.x, patterns.y)
    return float(
        np.mean((model - amplitudes) ** 2) / np.mean(np.square(amplitudes, dtype=np.float64))
    )


@dataclass(frozen=True, kw_only=True)
class Run:
    """What one pty-chi run asks for."""

    engine: Engine
    settings: Mapping[str, Any]
    epochs: int
    batch_size: int
    seed: int
    gpu: bool
    double: bool
    probe_modes: int
    refine_probe: bool
    refine_positions: bool


Snapshot = tuple[np.ndarray, np.ndarray]
"""(object (H, W), probe (modes, N, N)), complex64 on the CPU."""


def _options(api: Any, run: Run) -> Any:
    options = getattr(api, run.engine.options_class)()
    reconstructor = options.reconstructor_options
    reconstructor.num_epochs = run.epochs
    reconstructor.random_seed = run.seed
    # pty-chi's "non-deterministic" patch accumulation (scatter_add_) is only so on a GPU;
    # on the CPU it is deterministic and far faster than the alternative (index_put_)
    reconstructor.allow_nondeterministic_algorithms = True
    reconstructor.default_device = api.Devices.GPU if run.gpu else api.Devices.CPU
    reconstructor.default_dtype = api.Dtypes.FLOAT64 if run.double else api.Dtypes.FLOAT32
    placement = options.object_options
    placement.determine_position_origin_coords_by = api.ObjectPosOriginCoordsMethods.SPECIFIED
    placement.position_origin_coords = np.zeros(2)
    options.object_options.optimizable = True
    options.probe_options.optimizable = run.refine_probe
    options.probe_position_options.optimizable = run.refine_positions
    run.engine.configure(api, options, run)
    return options


def initial_probe(probe: np.ndarray, modes: int) -> np.ndarray:
    """(modes, N, N) complex64: ``probe``'s first mode and, for ``modes`` > 1, pty-chi's
    orthogonal Hermite modes around it (the usual start of a mixed-state probe)."""
    probe = np.asarray(probe, dtype=np.complex64)
    if probe.ndim == 2:
        probe = probe[None]
    if probe.shape[0] == modes:
        return probe
    import torch

    import_ptychi()
    import ptychi.utils as utils

    start = np.zeros((1, modes, *probe.shape[-2:]), dtype=np.complex64)
    start[0, 0] = probe[0]
    with isolated():
        grown = utils.orthogonalize_initial_probe(torch.from_numpy(start))
    return np.ascontiguousarray(grown[0].numpy(), dtype=np.complex64)


def solve(
    run: Run,
    canvas: Canvas,
    patterns: Patterns,
    amplitudes: np.ndarray,
    obj: np.ndarray,
    probe: np.ndarray,
    on_epoch: Callable[[int, float, Callable[[], Snapshot]], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run ``run.epochs`` epochs of the engine from ``obj`` (H, W) and ``probe`` (m, N, N).

    ``on_epoch(epoch, loss, snapshot)`` is called after each epoch with pty-chi's
    relative data misfit and a function that copies the current (object, probe) off the
    task (only a caller that needs them pays for the copy); returning True stops early. Returns the object (H, W), the
    probe (m, N, N), both complex64 on the CPU, and the epochs run.
    """
    api, PtychographyTask = import_ptychi()
    power = float(np.mean(np.square(amplitudes, dtype=np.float64)))
    with isolated():
        options = _options(api, run)
        task = PtychographyTask(
            options,
            diffraction_data=np.square(amplitudes, dtype=np.float32),
            object_data=np.asarray(obj, dtype=np.complex64)[None],
            probe_data=np.asarray(probe, dtype=np.complex64)[None],
            probe_position_x_px=patterns.x - canvas.origin[1] - 0.5,
            probe_position_y_px=patterns.y - canvas.origin[0] - 0.5,
        )
        with task:
            epochs = 0
            for epoch in range(run.epochs):
                task.run(n_epochs=1)
                epochs = epoch + 1
                if on_epoch is None:
                    continue
                loss = float(task.reconstructor.loss_tracker.table["loss"].iloc[-1]) / power
                if on_epoch(epoch, loss, lambda: _snapshot(task)):
                    break
            result, modes = _snapshot(task)
    return result, modes, epochs


def _snapshot(task: Any) -> Snapshot:
    obj = task.get_data_to_cpu("object", as_numpy=True)[0].astype(np.complex64)
    probe = task.get_data_to_cpu("probe", as_numpy=True)[0].astype(np.complex64)
    return obj, probe

"""Throughput benchmark of one backend, with figures relative to references of the same run.

The machine is shared and noisy, so absolute rates are reported next to ratios: the
end-to-end inference rate over the bare network forward rate (both measured here),
and every rate per GFLOP/s of a numpy float32 matrix product measured at the start
of the same run. A ratio survives a busy neighbour; an absolute number does not.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core.architecture import initial_arrays
from ptycho_core.config import InferenceConfig, ModelConfig, TrainingConfig
from ptycho_core.data import save_npz
from ptycho_core.entry_points import registered_distribution
from ptycho_core.hooks import hookimpl, make_plugin_manager
from ptycho_core.protocol import SupportsArrayImport, SupportsForward, declared_capabilities
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import (
    get_backend,
    prepare_training_data,
    reconstruct,
    require_capability,
)

__all__ = ["BenchSettings", "reference_gflops", "run_benchmark"]


@dataclass(frozen=True, kw_only=True)
class BenchSettings:
    """What ``ptycho bench`` measures; the defaults are its reference case (N 64, gridsize 1)."""

    N: int = 64
    gridsize: int = 1
    n_filters_scale: int = 1
    n_patterns: int = 512
    batch_size: int = 64
    train_batch_size: int = 16
    train_groups: int = 256
    epochs: int = 3
    repeats: int = 3
    precision: str = "32"
    accelerator: str = "auto"
    seed: int = 7
    backend_options: Mapping[str, Any] = field(default_factory=dict)
    """The backend's training options; for a backend that does not train, its import
    (export) settings, e.g. ``{"quantize": "int8"}`` for ``onnx``."""


class _EpochClock:
    """Hook plugin that timestamps the end of each epoch."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    @hookimpl
    def ptycho_train_start(self, backend: str, config: Any, n_groups: int) -> None:
        self.marks = [time.perf_counter()]

    @hookimpl
    def ptycho_epoch_end(self, epoch: int, nepochs: int, losses: Mapping[str, float]) -> None:
        self.marks.append(time.perf_counter())


def reference_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best-of-``repeats`` float32 matrix-product rate of numpy, in GFLOP/s."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: thread pool start, page faults
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def run_benchmark(
    backend_name: str, settings: BenchSettings | None = None, *, workdir: Path | None = None
) -> dict[str, Any]:
    """Measure training, bare-forward and end-to-end inference throughput of a backend.

    Returns a JSON-compatible dict: ``forward_patterns_per_s``, ``infer_patterns_per_s``,
    ``train_groups_per_s``, ``infer_over_forward`` and the reference-relative ratios. A
    backend that declares ``capabilities['trains']`` False is measured on a new network's
    weights (:func:`~ptycho_core.architecture.initial_arrays`) given to its
    ``import_arrays``; its training figures are None.
    """
    settings = BenchSettings() if settings is None else settings
    backend = get_backend(backend_name)
    distribution, version = registered_distribution(backend_name)
    reference = reference_gflops()

    model_config = ModelConfig(
        N=settings.N, gridsize=settings.gridsize, n_filters_scale=settings.n_filters_scale
    )
    channels = model_config.channels
    train_config = TrainingConfig(
        model=model_config,
        backend=backend_name,
        nepochs=settings.epochs,
        batch_size=settings.train_batch_size,
        n_groups=settings.train_groups,
        validation_split=0.0,
        early_stop_patience=settings.epochs,
        precision=settings.precision,
        accelerator=settings.accelerator,
        seed=settings.seed,
        backend_options=dict(settings.backend_options),
    )
    inference_config = InferenceConfig(
        backend=backend_name,
        batch_size=settings.batch_size,
        precision=settings.precision,
        accelerator=settings.accelerator,
    )

    train_set = default_dataset("train", N=settings.N, seed=settings.seed)
    test_set = default_dataset(
        "test", N=settings.N, n_positions=settings.n_patterns, seed=settings.seed
    )

    training = prepare_training_data(train_set, train_config)
    epoch_times = np.array([])
    train_rate: float | None = None
    if declared_capabilities(backend)["trains"]:
        clock = _EpochClock()
        hooks = make_plugin_manager(clock, load_entry_points=False).hook
        model = backend.train(training, train_config, hooks=hooks)
        epoch_times = np.diff(clock.marks)
        steady = epoch_times[1:] if len(epoch_times) > 1 else epoch_times
        train_rate = training.n_groups / statistics.median(steady)
    else:
        importer = require_capability(backend, SupportsArrayImport)
        arrays = initial_arrays(
            model_config, training.probe, training.intensity_scale, seed=settings.seed
        )
        model = importer.import_arrays(
            arrays,
            config=train_config,
            probe=training.probe,
            intensity_scale=training.intensity_scale,
        )

    forward = backend.forward if isinstance(backend, SupportsForward) else None
    rng = np.random.default_rng(settings.seed)
    batch = rng.random((settings.batch_size, settings.N, settings.N, channels), dtype=np.float32)
    coords = np.zeros((settings.batch_size, 1, 2, channels), dtype=np.float32)
    n_batches = max(1, settings.n_patterns // (settings.batch_size * channels))

    def run_forward() -> None:
        for _ in range(n_batches):
            forward(
                model, batch, coords, precision=settings.precision, accelerator=settings.accelerator
            )

    quiet = make_plugin_manager(load_entry_points=False).hook
    with tempfile.TemporaryDirectory(prefix="ptycho-bench-") as tmp:
        data_path = Path(workdir or tmp) / "bench-test.npz"
        save_npz(test_set, data_path)

        def run_end_to_end() -> None:
            reconstruct(model, data_path, inference_config, hooks=quiet, backend=backend)

        # Warm up both paths, then alternate them so that a busy neighbour slows both alike.
        run_end_to_end()
        forward_times, infer_times = [], []
        if forward is not None:
            run_forward()
        for _ in range(settings.repeats):
            if forward is not None:
                forward_times.append(_timed(run_forward))
            infer_times.append(_timed(run_end_to_end))
    forward_rate = (
        n_batches * settings.batch_size * channels / min(forward_times) if forward_times else None
    )
    infer_time = min(infer_times)
    infer_rate = test_set.n_positions * channels / infer_time

    return {
        "backend": backend_name,
        "distribution": distribution,
        "version": version,
        "N": settings.N,
        "gridsize": settings.gridsize,
        "n_filters_scale": settings.n_filters_scale,
        "backend_options": dict(settings.backend_options),
        "precision": settings.precision,
        "accelerator": settings.accelerator,
        "batch_size": settings.batch_size,
        "forward_patterns_per_s": forward_rate,
        "infer_patterns_per_s": infer_rate,
        "train_groups_per_s": train_rate,
        "infer_over_forward": None if forward_rate is None else infer_rate / forward_rate,
        "reference_gflops": reference,
        "forward_per_reference_gflop": None if forward_rate is None else forward_rate / reference,
        "infer_per_reference_gflop": infer_rate / reference,
        "train_per_reference_gflop": None if train_rate is None else train_rate / reference,
        "epoch_seconds": [float(t) for t in epoch_times],
    }

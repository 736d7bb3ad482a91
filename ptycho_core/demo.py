"""``ptycho demo``: the whole pipeline on the embedded simulated dataset, in one call.

Simulate a training object and a different test object, train the chosen backend,
save and reload the bundle (so the demo exercises persistence too), reconstruct the
test object, evaluate it against the ground truth and draw one figure: truth and
reconstruction over the same (scanned) field of view, on shared scales, with the
training losses. The training recipe (:func:`demo_training_config`) is the one that gave
the best held-out quality within the demo's time budget on a 2-core CPU (docs/quality.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.data import save_npz
from ptycho_core.figures import save_truth_comparison
from ptycho_core.hooks import HookRelay
from ptycho_core.outputs import output_set, prepare_output_dir
from ptycho_core.results import compare_with_truth, evaluate_stitched, save_reconstruction
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import (
    check_backend_options,
    get_backend,
    load_inference_bundle,
    reconstruct,
    save_model,
    train_cdi_model,
)

__all__ = ["DEMO_EPOCHS", "DEMO_GROUPS", "demo_training_config", "run_demo"]

DEMO_EPOCHS = 72
"""About 5 (pytorch) to 8 (tensorflow) minutes of training on 2 CPU cores."""
DEMO_GROUPS = 512


def demo_training_config(
    backend: str,
    *,
    nphotons: float = 1e9,
    epochs: int | None = None,
    n_groups: int | None = None,
    precision: str = "32",
) -> TrainingConfig:
    """The demo's training settings for ``backend`` (also used to measure the docs' tables).

    The library defaults (``n_filters_scale`` 1, warmup and cosine decay, the calibrated
    output gain) with ``DEMO_EPOCHS`` epochs over every position of the training object.
    """
    return TrainingConfig(
        backend=backend,
        nepochs=DEMO_EPOCHS if epochs is None else epochs,
        n_groups=DEMO_GROUPS if n_groups is None else n_groups,
        nphotons=nphotons,
        precision=precision,
    )


def _caption(backend: str, metrics: dict[str, float]) -> str:
    """The figure's caption: the scores of the reconstruction shown (``evaluate`` keys)."""
    return (
        f"{backend}: amplitude SSIM {metrics['amplitude_ssim']:.3f}, "
        f"PSNR {metrics['amplitude_psnr']:.1f} dB; "
        f"phase SSIM {metrics['phase_ssim']:.3f}, PSNR {metrics['phase_psnr']:.1f} dB"
    )


def run_demo(
    *,
    backend: str,
    output_dir: Path,
    epochs: int | None = None,
    n_groups: int | None = None,
    nphotons: float = 1e9,
    precision: str = "32",
    hooks: HookRelay | None = None,
    echo: Any = print,
    backend_options: Mapping[str, Any] | None = None,
) -> dict[str, float]:
    """Run the demo; writes data, bundle, reconstruction, metrics and ``demo.png`` as one set.

    ``nphotons`` is the dose of the simulated data (and of the training's Poisson
    scale); ``precision`` that of training. Returns the test-set metrics (also written to
    ``metrics.json``, with the training's wall time as ``train_seconds``).
    ``backend_options`` go to the training's ``TrainingConfig.backend_options``; the
    reconstruction of the test set runs with none.
    """
    options = {} if backend_options is None else dict(backend_options)
    # fail fast, before simulating anything
    check_backend_options(get_backend(backend), options, "training")
    output_dir = prepare_output_dir(output_dir)
    with output_set(output_dir) as stage:
        metrics, train_seconds = _run(
            backend, stage, output_dir, epochs, n_groups, nphotons, precision, hooks, echo, options
        )
    echo(
        f"trained in {train_seconds:.0f} s; test object: "
        + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
        + f"\nwrote {output_dir / 'demo.png'}"
    )
    return metrics


def _run(
    backend: str,
    stage: Path,
    output_dir: Path,
    epochs: int | None,
    n_groups: int | None,
    nphotons: float,
    precision: str,
    hooks: HookRelay | None,
    echo: Any,
    backend_options: Mapping[str, Any],
) -> tuple[dict[str, float], float]:
    """The demo's steps, writing into ``stage`` (committed to ``output_dir`` as one set)."""
    train_set = default_dataset("train", nphotons=nphotons)
    test_set = default_dataset("test", nphotons=nphotons)
    save_npz(train_set, stage / "train.npz")
    save_npz(test_set, stage / "test.npz")
    echo(f"simulated {train_set.n_positions} training and {test_set.n_positions} test patterns")

    config = demo_training_config(
        backend, nphotons=nphotons, epochs=epochs, n_groups=n_groups, precision=precision
    ).replace(
        train_data_file=str(output_dir / "train.npz"),
        output_dir=str(output_dir),
        backend_options=backend_options,
    )
    start = time.perf_counter()
    results = train_cdi_model(train_set, None, config, hooks=hooks)
    train_seconds = time.perf_counter() - start
    bundle = stage / "model.ptycho"
    save_model(results["model"], bundle)
    model, _ = load_inference_bundle(bundle)
    echo(f"saved and reloaded {output_dir / bundle.name}")

    inference = InferenceConfig(backend=backend, test_data_file=str(output_dir / "test.npz"))
    reconstruction = reconstruct(model, test_set, inference, hooks=hooks)
    save_reconstruction(reconstruction.stitched, stage / "reconstruction.npz", backend=backend)
    metrics = evaluate_stitched(reconstruction.stitched, test_set)
    record = {**metrics, "train_seconds": train_seconds}
    (stage / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True))

    comparison = compare_with_truth(
        reconstruction.stitched, test_set, amplitude_scale=metrics["amplitude_scale"]
    )
    save_truth_comparison(
        comparison,
        stage / "demo.png",
        history=model.history,
        caption=_caption(backend, metrics),
    )
    return metrics, train_seconds

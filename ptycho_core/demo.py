"""``ptycho demo``: the whole pipeline on the embedded simulated dataset, in one call.

Simulate a training object and a different test object, train the chosen backend,
save and reload the bundle (so the demo exercises persistence too), reconstruct the
test object, evaluate it against the ground truth and draw one figure.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ptycho_core.backend_selector import select_backend
from ptycho_core.config import InferenceConfig, TrainingConfig
from ptycho_core.data import save_npz
from ptycho_core.hooks import HookRelay
from ptycho_core.results import evaluate_stitched, save_reconstruction
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import (
    load_inference_bundle,
    reconstruct,
    save_model,
    train_cdi_model,
)

__all__ = ["DEMO_EPOCHS", "DEMO_GROUPS", "run_demo"]

DEMO_EPOCHS = 20
DEMO_GROUPS = 512


def run_demo(
    *,
    backend: str,
    output_dir: Path,
    epochs: int | None = None,
    n_groups: int | None = None,
    hooks: HookRelay | None = None,
    echo: Any = print,
) -> dict[str, float]:
    """Run the demo; writes data, bundle, reconstruction, metrics and ``demo.png``.

    Returns the test-set metrics (also written to ``metrics.json``).
    """
    from ptycho_core.cli.figures import save_comparison

    select_backend(backend)  # fail fast, before simulating anything
    output_dir.mkdir(parents=True, exist_ok=True)
    train_set, test_set = default_dataset("train"), default_dataset("test")
    save_npz(train_set, output_dir / "train.npz")
    save_npz(test_set, output_dir / "test.npz")
    echo(f"simulated {train_set.n_positions} training and {test_set.n_positions} test patterns")

    config = TrainingConfig(
        backend=backend,
        nepochs=DEMO_EPOCHS if epochs is None else epochs,
        n_groups=DEMO_GROUPS if n_groups is None else n_groups,
        train_data_file=str(output_dir / "train.npz"),
        output_dir=str(output_dir),
    )
    results = train_cdi_model(train_set, None, config, hooks=hooks)
    bundle = output_dir / "model.ptycho"
    save_model(results["model"], bundle)
    model, _ = load_inference_bundle(bundle)
    echo(f"saved and reloaded {bundle}")

    inference = InferenceConfig(backend=backend, test_data_file=str(output_dir / "test.npz"))
    reconstruction = reconstruct(model, test_set, inference, hooks=hooks)
    save_reconstruction(reconstruction.stitched, output_dir / "reconstruction.npz", backend=backend)
    metrics = evaluate_stitched(reconstruction.stitched, test_set)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))

    truth = test_set.object
    assert truth is not None  # the embedded dataset always carries its ground truth
    save_comparison(
        {
            "true amplitude": np.abs(truth),
            "reconstructed amplitude": reconstruction.amplitude,
            "true phase": np.angle(truth),
            "reconstructed phase": reconstruction.phase,
        },
        output_dir / "demo.png",
        history=model.history,
        caption=(
            f"{backend}: amplitude SSIM {metrics['amplitude_ssim']:.3f}, "
            f"phase SSIM {metrics['phase_ssim']:.3f}"
        ),
    )
    echo(
        "test object: "
        + ", ".join(f"{name} {value:.3f}" for name, value in metrics.items())
        + f"\nwrote {output_dir / 'demo.png'}"
    )
    return metrics

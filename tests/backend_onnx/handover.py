"""Exports made where both frameworks are installed, handed to the framework-free `onnx` env.

    python tests/backend_onnx/handover.py FOLDER

Trains a small ``pytorch`` network on simulated data, converts it to ``tensorflow`` and
exports each (``ptycho_core.convert.export_bundle``) to ONNX: ``pytorch-onnx.ptycho`` and
``tensorflow-onnx.ptycho`` in float32, ``pytorch-onnx-int8.ptycho`` quantised. It writes the
held-out test data (``test.npz``) and, in ``reference.npz``, the inputs of one batch with
what each source backend computed on them (``forward``) and its stitched reconstruction of
the test scan, and in ``reference.json`` the evaluation of that reconstruction. The tests
in this folder read FOLDER from ``PTYCHO_ONNX_HANDOVER`` (tox's `onnx` env runs this script
with the `both` env's Python first) or, where both frameworks are importable, make it
themselves. Nothing here is committed: every file is generated at test time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

SOURCES = ("pytorch", "tensorflow")
FILES = (
    "test.npz",
    "reference.npz",
    "reference.json",
    "pytorch-onnx.ptycho",
    "tensorflow-onnx.ptycho",
    "pytorch-onnx-int8.ptycho",
)
BATCH = 16


def make_handover(folder: Path) -> Path:
    """Write the hand-over files into ``folder`` (created); returns it."""
    from ptycho_core.convert import convert_model, export_bundle
    from ptycho_core.data import save_npz
    from ptycho_core.hooks import make_plugin_manager
    from ptycho_core.metrics import evaluate
    from ptycho_core.simulate import default_dataset
    from ptycho_core.testing import data
    from ptycho_core.workflows import get_backend, reconstruct

    folder.mkdir(parents=True, exist_ok=True)
    hooks = make_plugin_manager(load_entry_points=False).hook
    config = data.training_config("pytorch", data.DEFAULT_N, 1)
    training = data.training_data(data.simulated_dataset(data.DEFAULT_N), config)
    models = {"pytorch": get_backend("pytorch").train(training, config, hooks=hooks)}
    models["tensorflow"] = convert_model(models["pytorch"], "pytorch", "tensorflow")
    test = default_dataset("test", N=data.DEFAULT_N, n_positions=48, seed=5)
    save_npz(test, folder / "test.npz")
    groups = data.inference_groups(test, 1)
    batch = {
        "diffraction": groups.diffraction[:BATCH],
        "coords_relative": groups.coords_relative[:BATCH],
    }
    reference: dict[str, np.ndarray] = dict(batch)
    metrics: dict[str, dict[str, float]] = {}
    for source, model in models.items():
        backend = get_backend(source)
        bundle = folder / f"{source}.ptycho"
        backend.save(model, bundle)
        export_bundle(bundle, "onnx", folder / f"{source}-onnx.ptycho")
        if source == "pytorch":
            options = {"quantize": "int8", "calibration_groups": 64}
            export_bundle(bundle, "onnx", folder / "pytorch-onnx-int8.ptycho", options=options)
        bundle.unlink()  # the framework bundles stay where the frameworks are
        reference[f"{source}.forward"] = backend.forward(model, **batch)
        result = reconstruct(model, folder / "test.npz", hooks=hooks)
        reference[f"{source}.object"] = result.stitched.image
        metrics[source] = evaluate(result.stitched.image, test.object, mask=result.stitched.covered)
    np.savez(folder / "reference.npz", **reference)
    (folder / "reference.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    return folder


if __name__ == "__main__":
    make_handover(Path(sys.argv[1]))

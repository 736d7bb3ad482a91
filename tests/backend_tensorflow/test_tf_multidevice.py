"""Several devices through tf.distribute: two logical CPU devices train one model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers_tf import hooks_for, subprocess_env

from ptycho_core.config import InferenceConfig
from ptycho_core.simulate import default_dataset
from ptycho_core.workflows import prepare_inference_data
from ptycho_tf.backend import TensorFlowBackend

SCRIPT = Path(__file__).with_name("multidevice_script.py")


def test_mirrored_strategy_on_two_logical_cpus_trains_a_loadable_model(tmp_path: Path) -> None:
    bundle, report = tmp_path / "mirrored.ptycho", tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(bundle), str(report)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads(report.read_text())
    assert info["strategy"] == "MirroredStrategy" and info["replicas"] == 2
    assert [d.rsplit(":", 2)[-2:] for d in info["devices"]] == [["CPU", "0"], ["CPU", "1"]]
    assert info["single_device"] is None
    assert len(info["history"]["loss"]) == 2 and all(np.isfinite(info["history"]["val_loss"]))

    backend = TensorFlowBackend()
    model = backend.load(bundle)  # this process has one CPU device: the bundle does not care
    assert model.config.devices == 2 and model.history == info["history"]
    data = prepare_inference_data(default_dataset("test", n_positions=24), model, InferenceConfig())
    patches = backend.infer(model, data, InferenceConfig(batch_size=16), hooks=hooks_for())
    assert patches.shape == (24, 64, 64, 1) and np.all(np.isfinite(patches.view(np.float32)))

"""Training on two CPU devices in a child process, then loading and inferring here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import hooks_for
from cli_helpers import import_path_env, run_python

from framework_suites.framework import Framework
from framework_suites.multidevice_script import STRATEGIES
from ptycho_core.bundle import read_manifest
from ptycho_core.config import InferenceConfig
from ptycho_core.physics import initial_output_gain
from ptycho_core.protocol import TrainingData

SCRIPT = Path(__file__).with_name("multidevice_script.py")


class MultiDeviceSuite:
    """The backend of ``fw`` trains on two devices (multidevice_script.py says how)."""

    def check_device_report(self, report: dict) -> None:
        """What the framework's run reports of its devices (nothing unless overridden)."""

    @pytest.mark.slow
    def test_two_cpu_devices_train_a_bundle_that_loads_and_infers(
        self, fw: Framework, tmp_path: Path, small_training: TrainingData
    ) -> None:
        run = tmp_path / "run"
        run.mkdir()
        bundle, report_path = run / "model.ptycho", tmp_path / "report.json"
        done = run_python(
            str(SCRIPT),
            fw.name,
            str(bundle),
            str(report_path),
            cwd=run,
            env=import_path_env(),
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert sorted(p.name for p in run.iterdir()) == ["model.ptycho"]  # no logs, no checkpoints
        report = json.loads(report_path.read_text())
        history = report["history"]
        assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["val_loss"])
        self.check_device_report(report)

        manifest = read_manifest(bundle)
        assert manifest["config"]["devices"] == 2
        assert manifest["config"]["strategy"] == STRATEGIES[fw.name]
        backend = fw.backend()
        model = backend.load(bundle)  # this process has one device: the bundle does not care
        assert model.config.devices == 2 and model.history == history
        assert model.extra["output_gain"] == report["gain"]
        assert report["gain"] != pytest.approx(initial_output_gain(model.probe), rel=1e-6)
        out = backend.infer(
            model,
            small_training.groups,
            InferenceConfig(backend=fw.name, accelerator="cpu"),
            hooks=hooks_for(),
        )
        assert out.shape == (small_training.n_groups, 64, 64, 1) and np.isfinite(out).all()

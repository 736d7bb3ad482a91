"""Multi-process training: DDP over 2 CPU processes (gloo), then load and infer here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers_torch import hooks_for

from ptycho_core.bundle import read_manifest
from ptycho_core.config import InferenceConfig
from ptycho_torch.backend import TorchBackend

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_saves_a_bundle_that_loads_and_infers(
    tmp_path, small_training
) -> None:
    bundle = tmp_path / "ddp.ptycho"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, str(HERE / "ddp_script.py"), str(bundle)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(report["history"]["loss"]) == 2 and "val_loss" in report["history"]
    manifest = read_manifest(bundle)
    assert manifest["config"]["strategy"] == "ddp" and manifest["config"]["devices"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp.ptycho"]  # no logs, no checkpoints
    model = TorchBackend().load(bundle)
    assert model.extra["output_gain"] == report["gain"] != 1.0
    out = TorchBackend().infer(
        model,
        small_training.groups,
        InferenceConfig(backend="pytorch", accelerator="cpu"),
        hooks=hooks_for(),
    )
    assert out.shape == (small_training.n_groups, 64, 64, 1) and np.isfinite(out).all()

"""pty-chi's engines (the ptycho-ptychi distribution) inside a real, headless Ptychodus.

Runs in the ``ptychi`` tox env (ptycho + torch + ptycho-ptychi + Ptychodus), which names
this file; a run of the whole folder leaves it out (conftest.py), because the
``ptychodus`` env has no ptycho-ptychi. Here ptycho-ptychi is required, never skipped.

pty-chi imports torchvision. The torchvision wheel made for the pinned CPU torch is a CUDA
build whose compiled operators do not load next to it, and it then fails at import with
``RuntimeError: operator torchvision::nms does not exist``. Ptychodus builds its own pty-chi
library while ``ModelCore`` is built and guards that import against ``ImportError`` only, so
without help it cannot start at all. ``launcher.install()`` (what ``ptycho-ptychodus``
runs) makes torchvision importable first where pty-chi is installed; every test here goes
through it, and ``test_ptychodus_own_ptychi_library_with_this_torchvision`` checks it in a
fresh process.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ptycho_ptychi  # noqa: F401  (required here: an import error fails, never skips)
import pytest
from helpers_ptychodus import (
    coverage,
    load_into,
    ptycho_reconstructor,
    set_settings,
    to_ptychodus,
)

from ptycho_core.bundle import read_manifest
from ptycho_core.data import PtychoData
from ptycho_core.metrics import evaluate

PTYCHI_BACKENDS = ("ptychi-dm", "ptychi-lsqml", "ptychi-rpie")
PTYCHO_KEYS = {"ptycho_pinn", "ptycho_supervised"}
# Ptychodus 1.7's own pty-chi library: name 'pty-chi', one reconstructor per algorithm.
PTYCHODUS_PTYCHI_KEYS = {
    f"pty-chi_{name}" for name in ("dm", "raar", "pie", "epie", "rpie", "lsqml", "autodiff", "bh")
}
ITERATIONS = 30
LSQML = {"Backend": "ptychi-lsqml", "NumEpochs": ITERATIONS, "Accelerator": "cpu", "Seed": 3}


def _keys(core) -> set[str]:
    return set(core.processing_core.processing_api.available_reconstructors())


# ----------------------------------------------------------------------------- the menu


def test_the_ptychi_backends_are_offered_in_a_real_model_core(model_core, captured) -> None:
    core = model_core()
    keys = _keys(core)
    # ptycho's two reconstructors; the engine is the Backend setting, not another key.
    assert {k for k in keys if k.startswith("ptycho_")} == PTYCHO_KEYS
    # Ptychodus's own pty-chi reconstructors are listed beside them.
    assert keys >= PTYCHODUS_PTYCHI_KEYS
    # The usable backends Ptychodus's log names for the Backend setting include pty-chi's.
    set_settings(core, Backend="no-such-backend")
    (usable,) = re.findall(r"usable backends: ([^;]*);", captured.text(logging.WARNING))
    assert set(PTYCHI_BACKENDS) <= set(usable.split(", ")), usable
    for name in PTYCHI_BACKENDS:
        captured.records.clear()
        set_settings(core, Backend=name)
        assert not captured.text(logging.WARNING), name
        settings = ptycho_reconstructor(core).settings
        assert settings.inference_config(model_path="m.ptycho").backend == name


# ----------------------------------------------------------------------------- end to end


@dataclass(frozen=True)
class Run:
    folder: Path
    test: PtychoData
    image: np.ndarray
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def run(tmp_path_factory, installed, small_train, small_test) -> Run:
    from ptychodus.model import ModelCore

    folder = tmp_path_factory.mktemp("ptychi")
    seconds: dict[str, float] = {}
    with ModelCore(log_level=logging.INFO) as core:
        set_settings(core, **LSQML)
        train = load_into(core, folder / "h5", to_ptychodus(small_train), "train")
        train.export_training_data(folder / "run" / "train_data.npz", algorithm="ptycho_pinn")
        start = time.perf_counter()
        train.train_reconstructor_local(
            folder / "run", folder / "run", algorithm="ptycho_pinn", block=True
        )
        seconds["train"] = time.perf_counter() - start
        test = load_into(core, folder / "h5", to_ptychodus(small_test), "test")
        start = time.perf_counter()
        output = test.reconstruct_local(algorithm="ptycho_pinn", block=True)
        seconds["reconstruct"] = time.perf_counter() - start
        image = output.get_product().object_.get_layer(0)
    return Run(folder=folder, test=small_test, image=image, seconds=seconds)


def test_training_in_ptychodus_wrote_a_ptychi_lsqml_bundle(run: Run) -> None:
    manifest = read_manifest(run.folder / "run" / "model.ptycho")
    assert manifest["backend"] == "ptychi-lsqml"
    assert len(manifest["history"]["loss"]) == ITERATIONS
    assert manifest["history"]["loss"][-1] < manifest["history"]["loss"][0]


def test_the_object_keeps_the_input_geometry(run: Run) -> None:
    assert run.test.object is not None
    assert run.image.shape == run.test.object.shape
    assert np.all(np.isfinite(run.image))
    mask = coverage(run.test)
    assert np.all(run.image[~mask] == 1)  # uncovered pixels keep the input object (ones)
    assert np.all(run.image[mask] != 1)


def test_the_reconstruction_beats_its_flat_start(run: Run, record_property) -> None:
    assert run.test.object is not None
    mask = coverage(run.test)
    flat = np.ones_like(run.image)
    scores = {
        label: evaluate(image, run.test.object, mask=mask)
        for label, image in (("lsqml", run.image), ("flat", flat))
    }
    for label, values in scores.items():
        for metric in ("amplitude_ssim", "amplitude_psnr", "phase_ssim", "amplitude_mae"):
            record_property(f"{label}_{metric}", round(values[metric], 4))
    for name, value in run.seconds.items():
        record_property(f"seconds_{name}", round(value, 1))
    lsqml, flat_scores = scores["lsqml"], scores["flat"]
    # Seeded and bit-identical on the CPU; measured: amplitude SSIM 0.809 vs 0.176, PSNR
    # 25.4 vs 13.9 dB, MAE 0.030 vs 0.107, phase SSIM 0.338 vs 0.099 (30 LSQML iterations).
    assert lsqml["amplitude_ssim"] > flat_scores["amplitude_ssim"] + 0.4, scores
    assert lsqml["amplitude_psnr"] > flat_scores["amplitude_psnr"] + 6.0, scores
    assert lsqml["amplitude_mae"] < 0.5 * flat_scores["amplitude_mae"], scores
    assert lsqml["phase_ssim"] > flat_scores["phase_ssim"] + 0.15, scores


# ----------------------------------------------------------------------------- Ptychodus's own


PROBE = """\
import json, logging, sys

if __name__ == "__main__":
    from ptycho_ptychodus import launcher

    launcher.install()  # as ptycho-ptychodus does
    from ptychodus.model import ModelCore

    try:
        with ModelCore(log_level=logging.WARNING) as core:
            found = {"keys": sorted(core.processing_core.processing_api.available_reconstructors())}
    except Exception as error:
        found = {"error": f"{type(error).__name__}: {error}"}
    from ptycho_torch.torchvision_ops import torchvision_ops_available

    found["torchvision_ops"] = torchvision_ops_available()
    print(json.dumps(found))
"""


def test_ptychodus_own_ptychi_library_with_this_torchvision(tmp_path) -> None:
    """A fresh process set up as ``ptycho-ptychodus`` sets it up: Ptychodus starts."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run(
        [sys.executable, "-P", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # with the launcher, Ptychodus starts, and lists its own pty-chi reconstructors beside
    # ptycho's, whether or not torchvision's operators load
    assert "error" not in found, found
    assert set(found["keys"]) >= PTYCHODUS_PTYCHI_KEYS | PTYCHO_KEYS, found

"""The repository's comparison script (scripts/compare.py) on the installed 'epie' backend:
one ``--quick`` run, as a user starts it, measures the iterative solver end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "compare.py"


def test_quick_compare_run_measures_epie(tmp_path: Path) -> None:
    documents = [ROOT / "README.md", ROOT / "docs" / "quality.md"]
    documents += [ROOT / "docs" / "compare.png", ROOT / "docs" / "compare-results.json"]
    before = {path: path.read_bytes() if path.exists() else None for path in documents}
    work = tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "run", "--quick", "--workdir", str(work)]
    command += ["--doses", "1e4", "--backends", "epie"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr

    results = json.loads((work / "compare-quick-results.json").read_text())
    assert results["quick"] is True
    declared = results["backends"]["epie"]
    assert declared["distribution"] == "ptycho-epie"
    # it starts from a given object (the target of --then) and cannot refine a network
    assert declared["kind"] == "iterative"
    assert declared["capabilities"]["initial_object"] is True
    assert declared["capabilities"]["warm_start"] is False
    epie = results["doses"]["1e4"]["backends"]["epie"]
    # its own defaults: no epochs or groups of the networks' recipe
    # the stored command names the run's folder as WORKDIR, not a path of this machine
    assert epie["train"]["command"] == (
        "ptycho train WORKDIR/1e4/data/train.npz --backend epie"
        " --output-dir WORKDIR/1e4/epie/train --nphotons 1e4"
    )
    assert str(work) not in json.dumps(results)
    assert set(epie["modes"]) == {"single"}
    single = epie["modes"]["single"]
    assert single["seconds"] > 0 and epie["train"]["seconds"] > 0
    # rPIE on the quick 32-position scan at 1e4 photons: well above a flat object
    assert single["metrics"]["amplitude_ssim"] > 0.6, single["metrics"]
    assert single["metrics"]["frc_half_bit"] < 8, single["metrics"]
    assert {p: p.read_bytes() if p.exists() else None for p in documents} == before

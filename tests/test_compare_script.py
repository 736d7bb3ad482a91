"""scripts/compare.py: its tables, figure, backend classification and schedule, and one quick
end-to-end run on the test distributions' numpy backends (no framework needed).

The script's run on the real iterative backend lives with that backend's tests
(backends/ptycho-epie/tests/test_compare_script.py), where ``epie`` is installed.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from script_helpers import import_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "compare.py"


@pytest.fixture(scope="module")
def compare() -> ModuleType:
    return import_script("compare")


def _metrics(amplitude_ssim: float, phase_ssim: float) -> dict[str, float]:
    return {
        "amplitude_ssim": amplitude_ssim,
        "phase_ssim": phase_ssim,
        "amplitude_psnr": 30.04,
        "phase_psnr": 25.06,
        "frc_half_bit": 3.14,
    }


def _dose(scale: float) -> dict[str, Any]:
    net = "ptycho infer run/net/train/model.ptycho run/data/test.npz"
    return {
        "data_commands": ["ptycho simulate run/data/train.npz --split train --nphotons 1e9"],
        "backends": {
            "net": {
                "kind": "network",
                "train": {"command": "ptycho train net", "seconds": 400.0},
                "modes": {
                    "hybrid:iter": {
                        "command": f"{net} --then run/iter/train/model.ptycho",
                        "seconds": 10.0,
                        "metrics": _metrics(0.99 * scale, 0.98 * scale),
                        "then": "iter",
                        "then_bundle": True,
                    },
                    "single": {
                        "command": net,
                        "seconds": 8.0,
                        "metrics": _metrics(0.55 * scale, 0.2 * scale),
                    },
                    "refined": {
                        "command": f"{net} --refine-epochs 16",
                        "error": "ptycho infer: error: out of memory | really",
                        "epochs": 16,
                    },
                },
            },
            "iter": {
                "kind": "iterative",
                "train": {"command": "ptycho train iter", "seconds": 9.0},
                "modes": {
                    "single": {
                        "command": "ptycho infer iter",
                        "seconds": 3.5,
                        "metrics": _metrics(0.989 * scale, 0.984 * scale),
                    }
                },
            },
            "gone": {"error": "cannot load: ModuleNotFoundError: No module named 'gone'"},
        },
    }


RESULTS: dict[str, Any] = {
    "quick": False,
    "machine": "x86_64, 2 CPU cores, 3.11.7",
    "finished": "2030-01-01T00:00:00+00:00",
    "backends": {
        "net": {"distribution": "ptycho", "version": "0.1.0", "kind": "network"},
        "iter": {"distribution": "ptycho-iter", "version": "2.0", "kind": "iterative"},
    },
    "doses": {"1e4": _dose(0.8), "1e9": _dose(1.0)},
}


def test_dose_table_rows_times_and_failures(compare: ModuleType) -> None:
    lines = compare.dose_table(RESULTS, "1e9").splitlines()
    assert lines[0].startswith("| backend | mode | train (s) | infer (s) | amp SSIM | phase SSIM")
    body = lines[2:]
    assert [line.split(" | ")[0] for line in body] == ["| `gone`"] + ["| `iter`"] + ["| `net`"] * 3
    assert body[0].startswith("| `gone` | — | failed |") and "No module named 'gone'" in body[0]
    assert body[1] == "| `iter` | alone | 9.0 | 3.5 | 0.989 | 0.984 | 30.0 | 25.1 | 3.1 |"
    # modes in their order: single pass, refined, hybrids
    assert body[2] == "| `net` | single pass | 400.0 | 8.0 | 0.550 | 0.200 | 30.0 | 25.1 | 3.1 |"
    # a failed mode keeps its row, its error line escaped for markdown
    assert body[3].startswith("| `net` | refined on the test scan, 16 epochs | failed |")
    assert "out of memory \\| really" in body[3]
    # the hybrid's training is both models' training
    assert body[4] == (
        "| `net` | then `iter` (trained) | 409.0 | 10.0 | 0.990 | 0.980 | 30.0 | 25.1 | 3.1 |"
    )


def test_results_block_has_every_dose_the_figure_and_the_versions(compare: ModuleType) -> None:
    block = compare.results_block(RESULTS, "docs/compare.png")
    assert block.startswith("![Quality against wall time")
    assert "(docs/compare.png)" in block
    assert block.index("At 1e9 photons") < block.index("At 1e4 photons")
    assert "| 0.791 | 0.787 |" in block  # the 1e4 table: `iter` at 0.8 × (0.989, 0.984)
    assert "`iter` (ptycho-iter 2.0)" in block and "`net` (ptycho 0.1.0)" in block
    assert "x86_64, 2 CPU cores" in block and "2030-01-01" in block


def test_write_tables_replaces_only_between_markers(compare: ModuleType, tmp_path: Path) -> None:
    readme, guide = tmp_path / "README.md", tmp_path / "docs" / "guide.md"
    guide.parent.mkdir()
    text = (
        "# title\n\nbefore\n<!-- compare:results -->\nstale table\n<!-- /compare:results -->\n"
        "after\n<!-- compare:commands -->\n<!-- /compare:commands -->\nend\n"
    )
    readme.write_text(text)
    guide.write_text(text.replace("<!-- compare:commands -->\n<!-- /compare:commands -->\n", ""))
    figure = tmp_path / "docs" / "compare.png"
    compare.write_tables(RESULTS, [readme, guide], figure)

    written = readme.read_text()
    assert "stale table" not in written
    assert written.startswith("# title\n\nbefore\n<!-- compare:results -->\n![")
    assert "](docs/compare.png)" in written  # linked relative to each document
    assert "](compare.png)" in guide.read_text()
    assert written.endswith("<!-- /compare:commands -->\nend\n")
    commands = written.split("<!-- compare:commands -->\n")[1].split("<!-- /compare")[0]
    assert commands.startswith("```sh\nptycho simulate run/data/train.npz")
    assert "ptycho infer run/net/train/model.ptycho run/data/test.npz --then" in commands
    assert "<!-- compare:commands -->" not in guide.read_text()  # no marker, nothing added
    compare.write_tables(RESULTS, [readme], figure)  # regenerating changes nothing
    assert readme.read_text() == written


def test_figure_is_a_png(compare: ModuleType, tmp_path: Path) -> None:
    figure = tmp_path / "out" / "compare.png"
    compare.draw_figure(RESULTS, figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(figure).shape
    assert width > height > 300


def test_quick_results_never_reach_the_repository_documents(
    compare: ModuleType, tmp_path: Path
) -> None:
    quick = {**copy.deepcopy(RESULTS), "quick": True}
    before = {path: path.read_bytes() for path in compare.DOCS}
    for docs, figure in (
        (list(compare.DOCS), tmp_path / "compare.png"),
        ([tmp_path / "README.md"], compare.FIGURE),
    ):
        with pytest.raises(SystemExit, match="--quick results"):
            compare.write_tables(quick, docs, figure)
    assert {path: path.read_bytes() for path in compare.DOCS} == before
    assert not (tmp_path / "compare.png").exists()
    scratch = tmp_path / "README.md"
    scratch.write_text("<!-- compare:results -->\n<!-- /compare:results -->\n")
    compare.write_tables(quick, [scratch], tmp_path / "compare.png")  # scratch copies: fine
    assert "0.550" in scratch.read_text()


@pytest.mark.usefixtures("ptycho_test_distributions")
def test_classification_follows_the_declared_capabilities(compare: ModuleType) -> None:
    kinds = compare.classify_names(["numpy-gain", "object-echo", "direct-zero", "broken-import"])
    # numpy-gain continues training (--refine-epochs) but cannot start from an object
    assert kinds["numpy-gain"]["kind"] == "network"
    assert kinds["numpy-gain"]["capabilities"]["warm_start"] is True
    # object-echo can start from a given object: the target of --then
    assert kinds["object-echo"]["kind"] == "iterative"
    assert kinds["direct-zero"]["kind"] == "other"
    assert kinds["broken-import"]["error"].startswith("cannot load:")
    assert "fails at import on purpose" in kinds["broken-import"]["error"]
    assert compare.hybrid_targets(kinds) == ["object-echo"]


def test_choose_backends(compare: ModuleType) -> None:
    listing = [
        {"name": "b", "usable": True},
        {"name": "a", "usable": True},
        {"name": "x", "usable": False, "reason": "framework missing"},
    ]
    assert compare.choose_backends(listing, None) == (["a", "b"], {})
    names, unusable = compare.choose_backends(listing, ["x", "b", "nope", "b"])
    assert names == ["x", "b", "nope"]
    assert unusable == {"x": "framework missing", "nope": unusable["nope"]}
    assert "not installed" in unusable["nope"]


def test_network_training_is_the_demo_recipe(compare: ModuleType) -> None:
    from ptycho_core.cli.main import _training_config, build_parser
    from ptycho_core.demo import demo_training_config

    args = ["train", "t.npz", "--backend", "pytorch", "--output-dir", "o", "--nphotons", "1e4"]
    parsed = build_parser().parse_args([*args, *compare.network_train_args(quick=False)])
    config = _training_config(parsed).replace(train_data_file=None, output_dir=None)
    assert config == demo_training_config("pytorch", nphotons=1e4)
    quick = build_parser().parse_args([*args, *compare.network_train_args(quick=True)])
    assert _training_config(quick).nepochs == compare.QUICK["epochs"]


def test_plan_schedules_each_dose_and_estimates_from_earlier_runs(compare: ModuleType) -> None:
    kinds = {
        "net": {"kind": "network"},
        "iter": {"kind": "iterative"},
        "pytorch": {"kind": "network"},
        "gone": {"error": "cannot load"},
    }
    plan = compare.make_plan(["1e9", "1e4"], kinds, quick=False, previous=RESULTS)
    at_1e9 = [(s.what, s.backend) for s in plan.steps if s.dose == "1e9"]
    assert at_1e9[0] == ("simulate", "")
    assert ("train", "gone") not in at_1e9  # a backend that cannot load is not scheduled
    trains = [i for i, (what, _) in enumerate(at_1e9) if what == "train"]
    assert max(trains) < at_1e9.index(("hybrid:iter", "net"))  # every model before hybrids
    for step in ("single", "refine-sizing", "refined", "hybrid:iter"):
        assert (step, "net") in at_1e9 and (step, "pytorch") in at_1e9
    assert ("refined", "iter") not in at_1e9
    estimates = {(s.dose, s.what, s.backend): s.estimate_s for s in plan.steps}
    assert estimates[("1e9", "train", "net")] == 400.0  # this script's earlier run
    assert estimates[("1e9", "single", "iter")] == 3.5 + compare.EVALUATE_S
    quality = json.loads(compare.QUALITY_RESULTS.read_text())
    expected = quality["1e9"]["pytorch"]["train_seconds"] + 10.0  # scripts/quality.py's run
    assert estimates[("1e9", "train", "pytorch")] == expected
    assert estimates[("1e9", "refined", "net")] is None  # it failed: nothing to go by
    text = compare.describe_plan(plan, timeout=600)
    assert "estimated total:" in text and "each stops after at most 10 min" in text
    quick = compare.make_plan(["1e9"], kinds, quick=True, previous={})
    assert all(s.what != "refine-sizing" for s in quick.steps)


def test_a_deployment_backend_is_measured_through_each_networks_export(
    compare: ModuleType,
) -> None:
    kinds = {"net": {"kind": "network"}, "dep": {"kind": "deployment"}}
    assert compare.export_targets(kinds) == ["dep"]
    plan = compare.make_plan(["1e9"], kinds, quick=True, previous={})
    steps = [(s.what, s.backend) for s in plan.steps]
    assert ("export:dep", "net") in steps
    assert not [step for step in steps if step[1] == "dep"]  # never trained nor run alone
    results = copy.deepcopy(RESULTS)
    modes = results["doses"]["1e9"]["backends"]["net"]["modes"]
    modes["export:dep"] = {**modes["single"], "export": "dep", "export_seconds": 2.0}
    labels = {row["mode"]: row["label"] for row in compare.rows(results, "1e9")}
    assert labels["export:dep"] == "exported to `dep`"


def test_a_failing_command_is_recorded_and_the_run_goes_on(
    compare: ModuleType, tmp_path: Path
) -> None:
    args = ["infer", str(tmp_path / "missing.ptycho"), str(tmp_path / "t.npz")]
    args += ["--output-dir", str(tmp_path / "out")]
    mode = compare._measure(args, tmp_path / "out", tmp_path / "t.npz", timeout=120, epochs=3)
    assert mode["command"] == "ptycho " + " ".join(args)
    assert mode["error"].startswith("ptycho infer: error:") and "missing.ptycho" in mode["error"]
    assert mode["epochs"] == 3 and "metrics" not in mode


@pytest.mark.usefixtures("ptycho_test_distributions")
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    """``run --quick`` on the numpy test backends: a network, an iterative solver and one
    that cannot load; the results go to the work folder, never into the documents."""
    documents = (ROOT / "README.md", ROOT / "docs" / "quality.md", ROOT / "docs" / "compare.png")
    documents += (ROOT / "docs" / "compare-results.json",)
    before = {path: path.read_bytes() if path.exists() else None for path in documents}
    work = tmp_path / "work"
    command = [sys.executable, str(SCRIPT), "run", "--quick", "--workdir", str(work)]
    command += ["--doses", "1e4", "--backends", "numpy-gain", "object-echo", "broken-import"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "schedule" in done.stdout and "estimated total" in done.stdout
    results = json.loads((work / "compare-quick-results.json").read_text())
    assert results["quick"] is True
    assert results["backends"]["numpy-gain"]["distribution"] == "ptycho-testbackends"
    measured = results["doses"]["1e4"]["backends"]
    assert set(measured) == {"numpy-gain", "object-echo", "broken-import"}
    assert "fails at import on purpose" in measured["broken-import"]["error"]
    net = measured["numpy-gain"]
    assert set(net["modes"]) == {"single", "refined", "hybrid:object-echo"}
    assert "--epochs 1 --n-groups 32" in net["train"]["command"]
    hybrid = net["modes"]["hybrid:object-echo"]
    assert hybrid["then_bundle"] is True
    assert hybrid["command"].endswith("--then " + measured["object-echo"]["train"]["bundle"])
    assert set(measured["object-echo"]["modes"]) == {"single"}
    for mode in (*net["modes"].values(), measured["object-echo"]["modes"]["single"]):
        assert set(mode["metrics"]) >= {"amplitude_ssim", "phase_ssim", "frc_half_bit"}
        assert mode["seconds"] > 0
    # object-echo returns the network's object: the hybrid scores as the single pass
    assert hybrid["metrics"] == pytest.approx(net["modes"]["single"]["metrics"], abs=1e-6)
    assert {p: p.read_bytes() if p.exists() else None for p in documents} == before

    scratch = tmp_path / "README.md"
    scratch.write_text("<!-- compare:results -->\n<!-- /compare:results -->\n")
    tables = [sys.executable, str(SCRIPT), "tables", "--results"]
    tables += [str(work / "compare-quick-results.json")]
    refused = subprocess.run(tables, capture_output=True, text=True, check=False, timeout=120)
    assert refused.returncode != 0 and "--quick results" in refused.stderr
    tables += ["--docs", str(scratch), "--figure", str(tmp_path / "compare.png")]
    subprocess.run(tables, capture_output=True, text=True, check=True, timeout=120)
    assert "| `broken-import` | — | failed |" in scratch.read_text()
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_the_documents_hold_the_blocks_tables_rewrites(compare: ModuleType) -> None:
    readme, guide = (path.read_text() for path in compare.DOCS)
    for text in (readme, guide):
        assert text.count("<!-- compare:results -->\n") == 1
        assert text.count("<!-- /compare:results -->") == 1
    assert guide.count("<!-- compare:commands -->\n") == 1
    assert "python scripts/compare.py run" in readme


def test_stored_results_name_no_folder_of_the_measuring_machine(
    compare: ModuleType, tmp_path: Path
) -> None:
    work = tmp_path / "run"
    results = {
        "doses": {"1e9": {"data_commands": [f"ptycho simulate {work}/1e9/data/train.npz"]}},
        "backends": [{"bundle": str(work / "1e9" / "epie" / "train" / "model.ptycho")}],
        "seconds": 1.5,
        "elsewhere": "/data/mine.npz",
    }
    stored = compare.portable(results, work)
    assert stored == {
        "doses": {"1e9": {"data_commands": ["ptycho simulate WORKDIR/1e9/data/train.npz"]}},
        "backends": [{"bundle": "WORKDIR/1e9/epie/train/model.ptycho"}],
        "seconds": 1.5,
        "elsewhere": "/data/mine.npz",
    }
    assert str(tmp_path) in json.dumps(results)  # the run's own copy keeps usable paths

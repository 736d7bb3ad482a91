"""scripts/deploy.py: the frontier table and figure from stored results, and the refusal
to publish a quick run (its measuring runs need both frameworks; they ran for the docs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from script_helpers import import_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "deploy.py"


@pytest.fixture(scope="module")
def deploy() -> ModuleType:
    return import_script("deploy")


def _variant(ssim: float) -> dict:
    metrics = {"amplitude_ssim": ssim, "phase_ssim": ssim / 3, "amplitude_psnr": 23.0}
    return {
        "held_out": {"metrics": metrics, "seconds": 2.0, "command": "ptycho infer WORKDIR/x"},
        "training_object": {"metrics": {**metrics, "amplitude_ssim": ssim + 0.01}},
        "bundle_bytes": 1000,
    }


def results(quick: bool = False) -> dict:
    variants = {"pytorch": 0.546, "tensorflow": 0.546, "onnx": 0.546, "onnx-int8": 0.543}
    rates = {"pytorch": 100.0, "tensorflow": 120.0, "onnx": 130.0, "onnx-int8": 310.0}
    return {
        "quick": quick,
        "scales": {
            "1": {
                "variants": {name: _variant(ssim) for name, ssim in variants.items()},
                "speed": {
                    "forward_patterns_per_s": rates,
                    "over_pytorch": {name: rate / 100.0 for name, rate in rates.items()},
                },
            }
        },
    }


def test_the_table_has_one_row_per_variant_with_quality_and_speed(deploy: ModuleType) -> None:
    rows = deploy.table(results()).splitlines()
    assert len(rows) == 2 + 4
    int8 = next(row for row in rows if "int8" in row)
    cells = [cell.strip() for cell in int8.strip("|").split("|")]
    assert cells == [
        "1",
        "`onnx` int8 (exported, static)",
        "0.543",
        "0.181",
        "0.553",
        "310",
        "3.10",
    ]


def test_tables_write_the_blocks_and_the_figure(deploy: ModuleType, tmp_path: Path) -> None:
    stored, doc, figure = tmp_path / "r.json", tmp_path / "doc.md", tmp_path / "f.png"
    stored.write_text(json.dumps(results()))
    doc.write_text("before\n<!-- deploy:frontier -->\nold\n<!-- /deploy:frontier -->\nafter\n")
    deploy.tables(stored, [doc], figure)
    text = doc.read_text()
    assert "old" not in text and "`onnx` int8" in text and text.endswith("after\n")
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_quick_results_are_never_published_into_the_repository(tmp_path: Path) -> None:
    documents = [ROOT / "README.md", ROOT / "docs" / "quality.md", ROOT / "docs" / "deploy.png"]
    before = {path: path.read_bytes() if path.exists() else None for path in documents}
    stored = tmp_path / "deploy-results.json"
    stored.write_text(json.dumps(results(quick=True)))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "tables", "--results", str(stored)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0 and "--quick" in done.stderr
    assert {path: path.read_bytes() if path.exists() else None for path in documents} == before
    # scratch copies are fine
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- deploy:frontier -->\n<!-- /deploy:frontier -->\n")
    command = [sys.executable, str(SCRIPT), "tables", "--results", str(stored), "--docs", str(doc)]
    command += ["--figure", str(tmp_path / "f.png")]
    subprocess.run(command, check=True, capture_output=True)
    assert "`pytorch` float32" in doc.read_text()

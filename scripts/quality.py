"""Measure reconstruction quality and regenerate every quality table in the docs.

    python scripts/quality.py run [--workdir DIR] [--only NAME ...]   # measure (about an hour)
    python scripts/quality.py tables                                  # rewrite the tables only

``run`` drives the ``ptycho`` command line exactly as a user would (``ptycho demo``,
``ptycho infer``, ``ptycho evaluate``), times every command, and stores what it measured
in ``docs/quality-results.json``; ``tables`` turns that file into the markdown tables
between ``<!-- quality:NAME -->`` and ``<!-- /quality:NAME -->`` markers in README.md and
docs/quality.md. Every figure in those tables therefore comes from one run of this
script, with the commands listed in docs/quality.md.

Measured, for each dose (1e9 and 1e4 photons per pattern) and each installed network
backend (pytorch, tensorflow):

- ``single``: ``ptycho demo`` (its training recipe, its time budget), held-out test object;
- ``fit``: the same model on its own training object (object 0 of the training set);
- ``untrained``: the same network freshly initialised, never trained (what training added);
- ``refined``: ``ptycho infer --refine-epochs K`` on the test scan (K sized to ≤ 60 s);
- ``hybrid``: ``ptycho infer --then EPIE_BUNDLE``: the trained ``epie`` solver (below), its
  fitted step size and iteration count, started from the network's object;

and the iterative baseline ``epie`` trained on the same training set, run on the test
scan from a flat object with its fitted iteration count and with as many iterations as fit
into the hybrid's total wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measuring import (
    REFINE_BUDGET_S,
    ROOT,
    CommandFailed,
    command_line,
    infer,
    machine,
    ptycho,
    refine_epochs_for_budget,
    save_json,
    write_blocks,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quiet TensorFlow in this process
RESULTS = ROOT / "docs" / "quality-results.json"
DOCS = (ROOT / "README.md", ROOT / "docs" / "quality.md")
DOSES = {"1e9": 1e9, "1e4": 1e4}
NETWORKS = ("pytorch", "tensorflow")


# ----------------------------------------------------------------------------- running


def untrained_bundle(backend: str, train: Path, out: Path, nphotons: float) -> None:
    """A freshly initialised network of the demo's architecture, saved as a bundle."""
    from ptycho_core.backend_selector import select_backend
    from ptycho_core.data import load_npz
    from ptycho_core.demo import demo_training_config
    from ptycho_core.protocol import TrainedModel
    from ptycho_core.workflows import prepare_training_data

    config = demo_training_config(backend, nphotons=nphotons)
    data = prepare_training_data(load_npz(train), config.replace(n_groups=16))
    if backend == "pytorch":
        import torch

        from ptycho_torch.training import build_network

        torch.manual_seed(config.seed)
        network = build_network(config.model, data.probe, data.intensity_scale)
    else:
        from ptycho_tf.training import build_network

        network = build_network(config.model, data.probe, data.intensity_scale, seed=config.seed)
    model = TrainedModel(
        backend=backend,
        config=config,
        probe=data.probe,
        intensity_scale=data.intensity_scale,
        network=network,
    )
    select_backend(backend).save(model, out)


def measure_network(backend: str, dose: str, work: Path, smoke: bool) -> dict[str, Any]:
    nphotons = DOSES[dose]
    folder = work / dose / backend
    if folder.exists():
        shutil.rmtree(folder)
    demo_args = ("demo", "--backend", backend, "--output-dir", str(folder))
    if dose != "1e9":
        demo_args += ("--nphotons", dose)
    if smoke:
        demo_args += ("--epochs", "1", "--n-groups", "32")
    seconds, _ = ptycho(*demo_args)
    demo = json.loads((folder / "metrics.json").read_text())
    bundle, test, train = folder / "model.ptycho", folder / "test.npz", folder / "train.npz"
    result: dict[str, Any] = {
        "demo_seconds": round(seconds, 1),
        "train_seconds": round(float(demo["train_seconds"]), 1),
        "demo_command": command_line(demo_args),
        "single": infer(bundle, test, folder / "single"),
        "fit": infer(bundle, train, folder / "fit"),
    }
    untrained_bundle(backend, train, folder / "untrained.ptycho", nphotons)
    result["untrained"] = infer(folder / "untrained.ptycho", test, folder / "untrained")

    # refinement: as many epochs as fit into the budget, timed from one and three epochs
    # (the difference leaves out start-up and graph compilation)
    one = infer(bundle, test, folder / "refine-1", "--refine-epochs", "1")
    three = infer(bundle, test, folder / "refine-3", "--refine-epochs", "3")
    sized = refine_epochs_for_budget(
        one["seconds"], three["seconds"], result["single"]["seconds"], REFINE_BUDGET_S
    )
    epochs = 1 if smoke else sized
    result["refined"] = infer(bundle, test, folder / "refined", "--refine-epochs", str(epochs))
    result["refined"]["epochs"] = epochs
    result["refined"]["refine_seconds"] = round(
        result["refined"]["seconds"] - result["single"]["seconds"], 1
    )
    return result


def measure_epie(dose: str, work: Path, results: dict[str, Any]) -> dict[str, Any]:
    """epie trained on the networks' training set, alone on the test scan and as the second
    stage of each network's hybrid (stored with that network), and alone again at each
    hybrid's wall time."""
    source = next(
        (work / dose / b for b in NETWORKS if (work / dose / b / "train.npz").exists()), None
    )
    if source is None:
        raise SystemExit(f"epie at {dose}: run a network first (its demo writes the data)")
    folder = work / dose / "epie"
    if folder.exists():
        shutil.rmtree(folder)
    args = ("train", str(source / "train.npz"), "--backend", "epie", "--output-dir", str(folder))
    args += ("--nphotons", dose)
    train_seconds, _ = ptycho(*args)
    bundle, test = folder / "model.ptycho", source / "test.npz"
    from ptycho_core.bundle import read_manifest

    iterations = int(read_manifest(bundle)["extra"]["iterations"])
    alone = infer(bundle, test, folder / "single")
    # wall time = startup + per_iteration · iterations, from two iteration counts
    longer = 5 * iterations
    timing = infer(bundle, test, folder / "timing", "--iterations", str(longer))
    per_iteration = max((timing["seconds"] - alone["seconds"]) / (longer - iterations), 1e-3)
    startup = alone["seconds"] - per_iteration * iterations
    out: dict[str, Any] = {
        "train_seconds": round(train_seconds, 1),
        "train_command": command_line(args),
        "single": {**alone, "iterations": iterations},
    }
    for backend in NETWORKS:
        network = results.get(dose, {}).get(backend)
        if network is None:
            continue
        net = work / dose / backend
        hybrid = infer(
            net / "model.ptycho", net / "test.npz", net / "hybrid", "--then", str(bundle)
        )
        network["hybrid"] = hybrid = {**hybrid, "iterations": iterations}
        matched = max(1, round((hybrid["seconds"] - startup) / per_iteration))
        run = infer(bundle, test, folder / f"matched-{backend}", "--iterations", str(matched))
        out[f"matched_{backend}"] = {**run, "iterations": matched}
    return out


def run(work: Path, only: list[str] | None, smoke: bool = False) -> None:
    """Measure; a ``smoke`` run (1 epoch) checks the script and leaves the docs alone."""
    store = work / "smoke-results.json" if smoke else RESULTS
    results = json.loads(store.read_text()) if store.exists() else {}
    results["machine"] = machine()
    for dose in DOSES:
        entry = results.setdefault(dose, {})
        for backend in NETWORKS:
            if only and f"{dose}/{backend}" not in only and backend not in only:
                continue
            print(f"measuring {backend} at {dose} photons ...", flush=True)
            entry[backend] = measure_network(backend, dose, work, smoke)
            save_json(store, results)
        if not only or "epie" in only or f"{dose}/epie" in only:
            print(f"measuring epie at {dose} photons ...", flush=True)
            entry["epie"] = measure_epie(dose, work, results)
            save_json(store, results)
    if not smoke:
        write_tables(results)


# ----------------------------------------------------------------------------- tables


def _row(name: str, entry: dict[str, Any], seconds: str) -> str:
    m = entry["metrics"]
    return (
        f"| {name} | {seconds} | {m['amplitude_ssim']:.3f} | {m['amplitude_psnr']:.1f} | "
        f"{m['phase_ssim']:.3f} | {m['phase_psnr']:.1f} | {m['frc_half_bit']:.1f} |"
    )


_HEADER = (
    "| | wall time | amp SSIM | amp PSNR (dB) | phase SSIM | phase PSNR (dB) | FRC half-bit (px) |\n"
    "|---|---|---|---|---|---|---|"
)


def dose_table(results: dict[str, Any], dose: str) -> str:
    entry = results.get(dose, {})
    lines = [_HEADER]
    for backend in NETWORKS:
        net = entry.get(backend)
        if net is None:
            continue
        lines += [
            _row(f"`{backend}` untrained (same network, no training)", net["untrained"], "—"),
            _row(
                f"`{backend}` single pass, held-out object",
                net["single"],
                f"train {net['train_seconds']:.0f} s + infer {net['single']['seconds']:.1f} s",
            ),
            _row(f"`{backend}` single pass, its own training object", net["fit"], "—"),
            _row(
                f"`{backend}` refined on the test scan ({net['refined']['epochs']} epochs)",
                net["refined"],
                f"{net['refined']['seconds']:.1f} s (refinement {net['refined']['refine_seconds']:.0f} s)",
            ),
        ]
        if "hybrid" in net:  # measured with epie, which trains after the networks
            lines.append(
                _row(
                    f"`{backend}` → trained `epie` hybrid ({net['hybrid']['iterations']} iterations)",
                    net["hybrid"],
                    f"{net['hybrid']['seconds']:.1f} s",
                )
            )
    epie = entry.get("epie")
    if epie is not None:
        lines.append(
            _row(
                f"`epie` alone ({epie['single']['iterations']} iterations, its fitted count)",
                epie["single"],
                f"{epie['single']['seconds']:.1f} s",
            )
        )
        for backend in NETWORKS:
            matched = epie.get(f"matched_{backend}")
            if matched is not None:
                lines.append(
                    _row(
                        f"`epie` alone, {matched['iterations']} iterations (the `{backend}` hybrid's wall time)",
                        matched,
                        f"{matched['seconds']:.1f} s",
                    )
                )
    return "\n".join(lines)


def _ssim(entry: dict[str, Any] | None, key: str = "amplitude_ssim") -> str:
    return "—" if entry is None else f"{entry['metrics'][key]:.3f}"


def targets_table(results: dict[str, Any]) -> str:
    """The headline figures against their targets, one column per network backend."""
    present = [b for b in NETWORKS if b in results.get("1e9", {})]
    lines = [
        "| figure | target | " + " | ".join(f"`{b}`" for b in present) + " |",
        "|---|---|" + "---|" * len(present),
    ]

    def row(name: str, target: str, cell: Callable[[str], str]) -> None:
        lines.append(f"| {name} | {target} | " + " | ".join(cell(b) for b in present) + " |")

    high = results.get("1e9", {})
    row("training-object fit, amplitude SSIM", "≥ 0.95", lambda b: _ssim(high[b]["fit"]))
    row(
        "held-out amplitude SSIM, single pass (training wall time)",
        "≥ 0.85 (≤ 10 min)",
        lambda b: f"{_ssim(high[b]['single'])} ({high[b]['train_seconds'] / 60:.1f} min)",
    )
    row(
        "held-out phase PSNR, single pass",
        "≥ 25 dB",
        lambda b: f"{high[b]['single']['metrics']['phase_psnr']:.1f} dB",
    )
    row(
        "held-out amplitude SSIM after refinement (its seconds)",
        "≥ 0.95 (≤ 60 s)",
        lambda b: f"{_ssim(high[b]['refined'])} ({high[b]['refined']['refine_seconds']:.0f} s)",
    )
    for dose in DOSES:
        entry = results.get(dose, {})
        epie = entry.get("epie", {})

        def hybrid(b: str, entry=entry, epie=epie) -> str:
            net = entry.get(b)
            if net is None or "hybrid" not in net:
                return "—"
            matched = epie.get(f"matched_{b}")
            pair = (net["hybrid"], matched)
            return " vs ".join(f"{_ssim(e)} / {_ssim(e, 'phase_ssim')}" for e in pair)

        row(
            f"{dose} photons: hybrid vs `epie` alone in the same wall time, amplitude / phase SSIM",
            "hybrid ≥ epie",
            hybrid,
        )
    low = results.get("1e4", {})

    def best(b: str) -> str:
        net = low.get(b)
        if net is None or "epie" not in low or "hybrid" not in net:
            return "—"
        name, score = max(
            ((k, net[k]["metrics"]["amplitude_ssim"]) for k in ("single", "refined", "hybrid")),
            key=lambda item: item[1],
        )
        return f"{score:.3f} ({name}) vs {_ssim(low['epie']['single'])}"

    row("1e4 photons: best network path vs `epie`, amplitude SSIM", "≥ epie + 0.10", best)
    return "\n".join(lines)


def commands_block(results: dict[str, Any]) -> str:
    lines = ["```sh"]
    for dose in DOSES:
        for backend in NETWORKS:
            net = results.get(dose, {}).get(backend)
            if net is None:
                continue
            lines.append(net["demo_command"])
            for key in ("single", "fit", "refined"):
                lines.append(net[key]["command"])
        epie = results.get(dose, {}).get("epie")
        if epie is not None:
            lines += [epie["train_command"], epie["single"]["command"]]
        for backend in NETWORKS:
            hybrid = results.get(dose, {}).get(backend, {}).get("hybrid")
            if hybrid is not None:
                lines.append(hybrid["command"])
    lines.append("```")
    return "\n".join(lines)


def tables(results: dict[str, Any]) -> dict[str, str]:
    return {
        "targets": targets_table(results),
        "dose-1e9": dose_table(results, "1e9"),
        "dose-1e4": dose_table(results, "1e4"),
        "commands": commands_block(results),
        "machine": f"Measured on: {results.get('machine', 'unknown')}.",
    }


def write_tables(results: dict[str, Any]) -> None:
    blocks = tables(results)
    for doc in DOCS:
        write_blocks(doc, "quality", blocks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="measure, store the results, rewrite the tables")
    run_parser.add_argument("--workdir", type=Path, default=Path("quality-runs"))
    run_parser.add_argument(
        "--only", nargs="*", help="e.g. pytorch, 1e4/tensorflow, epie (default: everything)"
    )
    run_parser.add_argument(
        "--smoke", action="store_true", help="1 epoch: check the script, leave the docs alone"
    )
    sub.add_parser("tables", help="rewrite the tables from docs/quality-results.json")
    args = parser.parse_args(argv)
    if args.command == "run":
        try:
            run(args.workdir, args.only, args.smoke)
        except CommandFailed as failure:  # a failure stops the run: every table needs each row
            raise SystemExit(str(failure)) from None
    else:
        write_tables(json.loads(RESULTS.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

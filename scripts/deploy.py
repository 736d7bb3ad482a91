"""The deployment frontier: held-out quality against forward speed, per network width.

    python scripts/deploy.py quality [--workdir DIR] [--scales 1 2] [--quick]
    python scripts/deploy.py speed   [--workdir DIR] [--scales 1 2] [--repeats 5]
    python scripts/deploy.py tables  [--results JSON] [--docs MD ...] [--figure PNG]

``quality`` drives the ``ptycho`` command line as a user would. It simulates the default
training and test data once, and for each ``n_filters_scale`` trains a ``pytorch`` network
with the demo's recipe (``ptycho_core.demo.demo_training_config``, the width changed),
exports it twice (``ptycho export --format onnx``, float32 and ``--option quantize=int8``),
converts it to ``tensorflow``, and scores every bundle (``--reuse`` keeps a network an earlier
run trained in the same ``--workdir`` and exports it again) on the held-out test object and on
its own training object (``ptycho infer`` + ``ptycho evaluate``).

``speed`` then times the bare forward pass (``forward``: network and object formation on one
batch) of every bundle in one process, the backends taking turns batch by batch so that a
busy machine slows all of them alike, and reports the best of ``--repeats`` rounds in
patterns per second, with ratios to ``pytorch`` float32 measured in the same rounds and the
ONNX float32 rate at several batch sizes. Run it on a quiet machine.

Both store their figures in ``docs/deploy-results.json`` (paths under ``--workdir`` written as
``WORKDIR``); ``tables`` writes the table
between ``<!-- deploy:frontier -->`` markers in README.md and docs/quality.md and the figure
``docs/deploy.png``. ``--quick`` (tiny data, one epoch) checks the script end to end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from measuring import ROOT, infer, machine, portable, ptycho, save_json, write_blocks

from ptycho_core.demo import demo_training_config

RESULTS = ROOT / "docs" / "deploy-results.json"
FIGURE = ROOT / "docs" / "deploy.png"
DOCS = (ROOT / "README.md", ROOT / "docs" / "quality.md")
VARIANTS = ("pytorch", "tensorflow", "onnx", "onnx-int8")
"""The bundles of one width: trained, converted, exported float32 and int8."""
BATCHES = (16, 32, 64, 128, 256)


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {"scales": {}}


def quality(
    workdir: Path, scales: Sequence[int], quick: bool, results_path: Path, reuse: bool = False
) -> None:
    results = _load(results_path)
    results["machine"] = machine()
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    sizes = ("--n-positions", "64") if quick else ()
    train_npz, test_npz = data / "train.npz", data / "test.npz"
    ptycho("simulate", str(train_npz), "--split", "train", *sizes)
    ptycho("simulate", str(test_npz), "--split", "test", *sizes)
    for scale in scales:
        folder = workdir / f"n{scale}"
        folder.mkdir(parents=True, exist_ok=True)
        config = demo_training_config("pytorch", epochs=1 if quick else None)
        config = config.replace(model=config.model.replace(n_filters_scale=scale))
        (folder / "config.json").write_text(config.to_json())
        bundles = {variant: folder / f"{variant}.ptycho" for variant in VARIANTS}
        entry: dict[str, Any] = {"variants": {}}
        if not (reuse and bundles["pytorch"].exists()):
            train_args = ("train", str(train_npz), "--config", str(folder / "config.json"))
            seconds, _ = ptycho(*train_args, "--output-dir", str(folder / "train"))
            (folder / "train" / "model.ptycho").replace(bundles["pytorch"])
            entry["train_seconds"] = round(seconds, 1)
        steps = {
            "tensorflow": ("convert", "--to", "tensorflow"),
            "onnx": ("export", "--format", "onnx"),
            "onnx-int8": ("export", "--format", "onnx", "--option", "quantize=int8"),
        }
        for variant, step in steps.items():
            ptycho(step[0], str(bundles["pytorch"]), *step[1:], "--output", str(bundles[variant]))
        for variant, bundle in bundles.items():
            out = folder / "infer" / variant
            entry["variants"][variant] = {
                "held_out": infer(bundle, test_npz, out / "test"),
                "training_object": infer(bundle, train_npz, out / "train"),
                "bundle_bytes": bundle.stat().st_size,
            }
        results["scales"][str(scale)] = {**results["scales"].get(str(scale), {}), **entry}
        results["quick"] = quick
        save_json(results_path, portable(results, workdir))


def _rates(workdir: Path, scale: int, repeats: int) -> dict[str, Any]:
    import numpy as np

    from ptycho_core.bench import reference_gflops
    from ptycho_core.workflows import get_backend

    folder = workdir / f"n{scale}"
    models = {}
    for variant in VARIANTS:
        backend = get_backend(variant.split("-")[0])
        models[variant] = (backend, backend.load(folder / f"{variant}.ptycho"))
    N = models["pytorch"][1].N
    rng = np.random.default_rng(0)
    batch = {b: rng.random((b, N, N, 1), dtype=np.float32) for b in BATCHES}
    coords = {b: np.zeros((b, 1, 2, 1), dtype=np.float32) for b in BATCHES}

    def timed(variant: str, size: int) -> float:
        backend, model = models[variant]
        start = time.perf_counter()
        backend.forward(model, batch[size], coords[size])
        return time.perf_counter() - start

    runs = [(variant, 64) for variant in VARIANTS]
    runs += [("onnx", size) for size in BATCHES if size != 64]
    runs += [("onnx-int8", size) for size in BATCHES if size != 64]
    for variant, size in runs:  # warm-up: sessions, graphs, thread pools
        timed(variant, size)
    reference = reference_gflops()
    best: dict[tuple[str, int], float] = {}
    for _ in range(repeats):
        for variant, size in runs:
            elapsed = min(timed(variant, size) for _ in range(3))
            best[(variant, size)] = min(best.get((variant, size), float("inf")), elapsed)
    rate = {key: key[1] / seconds for key, seconds in best.items()}
    torch_rate = rate[("pytorch", 64)]
    return {
        "reference_gflops": round(reference, 1),
        "batch": 64,
        "forward_patterns_per_s": {v: round(rate[(v, 64)], 1) for v in VARIANTS},
        "over_pytorch": {v: round(rate[(v, 64)] / torch_rate, 3) for v in VARIANTS},
        "onnx_by_batch": {str(b): round(rate[("onnx", b)], 1) for b in BATCHES},
        "onnx_int8_by_batch": {str(b): round(rate[("onnx-int8", b)], 1) for b in BATCHES},
    }


def speed(workdir: Path, scales: Sequence[int], repeats: int, results_path: Path) -> None:
    results = _load(results_path)
    for scale in scales:
        results["scales"].setdefault(str(scale), {})["speed"] = _rates(workdir, scale, repeats)
        save_json(results_path, results)


LABELS = {
    "pytorch": "`pytorch` float32",
    "tensorflow": "`tensorflow` float32 (converted)",
    "onnx": "`onnx` float32 (exported)",
    "onnx-int8": "`onnx` int8 (exported, static)",
}


def table(results: dict[str, Any]) -> str:
    rows = [
        "| n_filters_scale | variant | held-out amp SSIM | held-out phase SSIM | training-object amp SSIM | forward patterns/s (batch 64) | × `pytorch` |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale, entry in sorted(results["scales"].items()):
        speed_ = entry.get("speed", {})
        for variant in VARIANTS:
            measured = entry["variants"][variant]
            held, fit = measured["held_out"]["metrics"], measured["training_object"]["metrics"]
            rate = speed_.get("forward_patterns_per_s", {}).get(variant)
            ratio = speed_.get("over_pytorch", {}).get(variant)
            rows.append(
                f"| {scale} | {LABELS[variant]} | {held['amplitude_ssim']:.3f} | "
                f"{held['phase_ssim']:.3f} | {fit['amplitude_ssim']:.3f} | "
                f"{'—' if rate is None else f'{rate:.0f}'} | "
                f"{'—' if ratio is None else f'{ratio:.2f}'} |"
            )
    return "\n".join(rows)


def figure(results: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    markers = {"pytorch": "o", "tensorflow": "s", "onnx": "^", "onnx-int8": "v"}
    for variant in VARIANTS:
        points = [
            (entry["speed"]["forward_patterns_per_s"][variant], entry["variants"][variant])
            for _, entry in sorted(results["scales"].items())
            if "speed" in entry
        ]
        xs = [rate for rate, _ in points]
        ys = [m["held_out"]["metrics"]["amplitude_ssim"] for _, m in points]
        ax.plot(xs, ys, marker=markers[variant], label=LABELS[variant].replace("`", ""))
    for scale, entry in sorted(results["scales"].items()):
        if "speed" in entry:
            rate = entry["speed"]["forward_patterns_per_s"]["onnx-int8"]
            ssim = entry["variants"]["onnx-int8"]["held_out"]["metrics"]["amplitude_ssim"]
            ax.annotate(f"n={scale}", (rate, ssim), textcoords="offset points", xytext=(6, -4))
    ax.set_xscale("log")
    ax.set_xlabel("forward patterns/s (2 CPU cores, batch 64)")
    ax.set_ylabel("held-out amplitude SSIM")
    ax.set_title("Quality against speed, by network width and runtime")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def tables(results_path: Path, docs: Sequence[Path], figure_path: Path) -> None:
    results = _load(results_path)
    into_repository = figure_path.resolve() == FIGURE or any(doc.resolve() in DOCS for doc in docs)
    if results.get("quick") and into_repository:
        sys.exit(
            "deploy.py tables: these results are from --quick; refusing to write them into the "
            "repository's documents (give scratch copies with --docs and --figure)"
        )
    for doc in docs:
        write_blocks(doc, "deploy", {"frontier": table(results)})
    figure(results, figure_path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("quality", "speed"):
        sub = commands.add_parser(name)
        sub.add_argument("--workdir", type=Path, default=Path("deploy-work"))
        sub.add_argument("--scales", type=int, nargs="+", default=[1, 2])
        sub.add_argument("--results", type=Path, default=RESULTS)
    commands.choices["quality"].add_argument("--quick", action="store_true")
    commands.choices["quality"].add_argument(
        "--reuse", action="store_true", help="keep an earlier run's trained network (export again)"
    )
    commands.choices["speed"].add_argument("--repeats", type=int, default=5)
    tab = commands.add_parser("tables")
    tab.add_argument("--results", type=Path, default=RESULTS)
    tab.add_argument("--docs", type=Path, nargs="*", default=list(DOCS))
    tab.add_argument("--figure", type=Path, default=FIGURE)
    args = parser.parse_args(argv)
    if args.command == "quality":
        quality(args.workdir, args.scales, args.quick, args.results, args.reuse)
    elif args.command == "speed":
        speed(args.workdir, args.scales, args.repeats, args.results)
    else:
        tables(args.results, args.docs, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

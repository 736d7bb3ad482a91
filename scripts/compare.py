"""Compare every installed backend on the same simulated data: quality against wall time.

    python scripts/compare.py plan   [--doses 1e9 1e4] [--backends NAME ...] [--quick]
    python scripts/compare.py run    [--workdir DIR] [--doses 1e9 1e4] [--backends NAME ...] [--quick]
    python scripts/compare.py tables [--results JSON] [--docs MD ...] [--figure PNG]
    python scripts/compare.py classify NAME ...

``run`` drives the ``ptycho`` command line as a user would. For each dose it simulates the
default training and test data once (``ptycho simulate --nphotons``); then every backend
trains its own model on that training data (each dose trains its own models), reconstructs
the held-out test object, and ``ptycho evaluate --json`` scores it against the test object.
Wall times are measured around each command. A backend is one of two kinds, decided by
the capabilities its backend object implements (``ptycho_core.protocol``):

- *network*: supports warm starts (``SupportsWarmStart``, what ``ptycho infer
  --refine-epochs`` needs) and not initial objects. Trained with ``ptycho demo``'s recipe
  (``ptycho_core.demo.demo_training_config``) and measured three ways: a single pass, refined
  on the test scan (``--refine-epochs K``, K sized to about a minute) and, for each iterative
  backend measured, as a hybrid ``ptycho infer NET_BUNDLE test.npz --then X`` (X's trained
  bundle, or its name when X's training failed);
- *iterative*: supports initial objects (``SupportsInitialObject``, what ``--then`` needs).
  Trained with ``ptycho train --backend NAME`` and its own defaults, measured alone.

Any other backend is trained with its defaults and measured alone. A command that fails is
recorded with its error line and the run goes on; the tables show it as failed.

``run`` stores everything in ``docs/compare-results.json`` and then runs ``tables``: the
markdown between ``<!-- compare:NAME -->`` and ``<!-- /compare:NAME -->`` in README.md and
docs/quality.md, and the figure ``docs/compare.png``. ``--quick`` (tiny data, one epoch)
checks the script end to end in a few minutes; its results go to ``WORKDIR/
compare-quick-results.json`` and ``tables`` refuses to write them into the repository's
documents (give scratch copies with ``--docs`` and ``--figure``). ``plan`` prints what
``run`` would do and an estimate of how long each step takes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measuring import (
    REFINE_BUDGET_S,
    ROOT,
    CommandFailed,
    command_line,
    evaluate,
    machine,
    portable,
    ptycho,
    refine_epochs_for_budget,
    save_json,
    write_blocks,
)

RESULTS = ROOT / "docs" / "compare-results.json"
QUALITY_RESULTS = ROOT / "docs" / "quality-results.json"
DOCS = (ROOT / "README.md", ROOT / "docs" / "quality.md")
FIGURE = ROOT / "docs" / "compare.png"
QUICK_RESULTS_NAME = "compare-quick-results.json"
DEFAULT_DOSES = ("1e9", "1e4")
DEFAULT_TIMEOUT_S = 1800.0
QUICK = {"train_positions": 64, "test_positions": 32, "epochs": 1, "n_groups": 32}
"""``--quick``: patterns simulated, and the networks' training epochs and groups."""
EVALUATE_S = 3.0
"""Rough wall time of one ``ptycho evaluate`` (start-up included), for the schedule."""
SIMULATE_S = 5.0
"""Rough wall time of one ``ptycho simulate`` of the default data, for the schedule."""

NETWORK, ITERATIVE, DEPLOYMENT, OTHER = "network", "iterative", "deployment", "other"


# ----------------------------------------------------------------------------- backends


def classify_backend(backend: Any) -> dict[str, Any]:
    """A backend object's kind and the optional capabilities that decide it.

    ``iterative`` if it can start from a given object (the target of ``--then``),
    ``network`` if it can continue training on a scan (``--refine-epochs``), ``deployment``
    if it does not train but imports networks (``ptycho export``'s target), else ``other``.
    """
    from ptycho_core.protocol import (
        SupportsArrayImport,
        SupportsForward,
        SupportsInitialObject,
        SupportsWarmStart,
        declared_capabilities,
    )

    capabilities = {
        "warm_start": isinstance(backend, SupportsWarmStart),
        "initial_object": isinstance(backend, SupportsInitialObject),
        "forward": isinstance(backend, SupportsForward),
        "trains": declared_capabilities(backend)["trains"],
    }
    if not capabilities["trains"] and isinstance(backend, SupportsArrayImport):
        kind = DEPLOYMENT
    elif capabilities["initial_object"]:
        kind = ITERATIVE
    elif capabilities["warm_start"]:
        kind = NETWORK
    else:
        kind = OTHER
    return {"kind": kind, "capabilities": capabilities}


def classify_names(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:func:`classify_backend` of each installed backend by name; ``{"error": LINE}`` for a
    backend that cannot be loaded. Imports every framework asked for."""
    from ptycho_core.backend_selector import select_backend

    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            out[name] = classify_backend(select_backend(name))
        except Exception as error:  # any failure to load is this backend's result, not ours
            text = " ".join(str(error).split()) or type(error).__name__
            out[name] = {"error": f"cannot load: {text}"}
    return out


def classify_in_subprocess(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """:func:`classify_names` in a fresh process, so this one never imports a framework."""
    if not names:
        return {}
    command = [sys.executable, str(Path(__file__).resolve()), "classify", *names]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"classifying backends failed:\n{done.stderr}")
    return json.loads(done.stdout)


def installed_backends() -> list[dict[str, Any]]:
    """``ptycho backends --json``."""
    _, out = ptycho("backends", "--json")
    return json.loads(out)


def choose_backends(
    listing: Sequence[dict[str, Any]], wanted: Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    """The backends to measure: ``wanted`` (in its order), or every usable one (by name).

    Returns them and, for those that cannot run, the listing's reason (or 'not installed').
    """
    by_name: dict[str, dict[str, Any]] = {}
    for info in listing:
        by_name.setdefault(info["name"], info)
    names = (
        list(dict.fromkeys(wanted))
        if wanted
        else sorted(n for n, i in by_name.items() if i["usable"])
    )
    unusable = {}
    for name in names:
        info = by_name.get(name)
        if info is None:
            unusable[name] = "not installed (not listed by `ptycho backends`)"
        elif not info["usable"]:
            unusable[name] = str(info.get("reason") or "not usable")
    return names, unusable


def discover(
    wanted: Sequence[str] | None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """``ptycho backends --json`` and, for each backend to measure, its kind (or error)."""
    listing = installed_backends()
    names, unusable = choose_backends(listing, wanted)
    kinds = classify_in_subprocess([n for n in names if n not in unusable])
    return listing, {name: kinds.get(name, {"error": unusable.get(name, "")}) for name in names}


def hybrid_targets(kinds: dict[str, dict[str, Any]]) -> list[str]:
    """The iterative backends a network hands its object to (``--then``)."""
    return [name for name, info in kinds.items() if info.get("kind") == ITERATIVE]


def export_targets(kinds: dict[str, dict[str, Any]]) -> list[str]:
    """The deployment backends a network's trained bundle is exported to (``ptycho export``);
    they are measured through those exports, never trained."""
    return [name for name, info in kinds.items() if info.get("kind") == DEPLOYMENT]


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Step:
    """One timed step of a run: what it is, and how long it is expected to take."""

    dose: str
    what: str
    backend: str = ""
    estimate_s: float | None = None


@dataclass
class Plan:
    doses: list[str]
    kinds: dict[str, dict[str, Any]]
    quick: bool
    steps: list[Step] = field(default_factory=list)

    @property
    def runnable(self) -> list[str]:
        """The backends trained and run on their own (deployment ones run exports only)."""
        return [
            name for name, info in self.kinds.items() if info.get("kind") not in (None, DEPLOYMENT)
        ]


def network_train_args(quick: bool) -> tuple[str, ...]:
    """``ptycho train`` flags that reproduce ``ptycho demo``'s training recipe
    (``demo_training_config``: its epochs and groups, the library's other defaults)."""
    if quick:
        return ("--epochs", str(QUICK["epochs"]), "--n-groups", str(QUICK["n_groups"]))
    from ptycho_core.demo import DEMO_EPOCHS, DEMO_GROUPS

    return ("--epochs", str(DEMO_EPOCHS), "--n-groups", str(DEMO_GROUPS))


def _estimates(previous: dict[str, Any], quick: bool) -> Any:
    """A function (dose, step, backend[, target]) -> seconds or None, from earlier runs:
    this script's own results first, then scripts/quality.py's for the backends it measured."""
    quality: dict[str, Any] = {}
    if not quick and QUALITY_RESULTS.exists():
        quality = json.loads(QUALITY_RESULTS.read_text())

    def from_quality(dose: str, what: str, backend: str, target: str) -> float | None:
        doses = [dose] + [
            d for d in DEFAULT_DOSES if d != dose
        ]  # training time hardly depends on it
        for d in doses:
            entry = quality.get(d, {}).get(backend)
            if not isinstance(entry, dict):
                continue
            if what == "train":  # a demo's training time leaves out start-up and saving
                return float(entry["train_seconds"]) + (10.0 if "demo_seconds" in entry else 0.0)
            if what in ("single", "refined") and what in entry:
                return float(entry[what]["seconds"]) + EVALUATE_S
            if what == "refine-sizing" and "refined" in entry:
                per_epoch = entry["refined"]["refine_seconds"] / entry["refined"]["epochs"]
                return 2 * float(entry["single"]["seconds"]) + 4 * per_epoch
            if what == "hybrid" and target == "epie" and "hybrid" in entry:
                return float(entry["hybrid"]["seconds"]) + EVALUATE_S
        return None

    def estimate(dose: str, what: str, backend: str, target: str = "") -> float | None:
        entry = previous.get("doses", {}).get(dose, {}).get("backends", {}).get(backend, {})
        if what == "train" and "seconds" in entry.get("train", {}):
            return float(entry["train"]["seconds"])
        if what == "refine-sizing" and "refine_sizing_seconds" in entry:
            return float(entry["refine_sizing_seconds"])
        key = f"{what}:{target}" if what in ("hybrid", "export") else what
        mode = entry.get("modes", {}).get(key, {})
        if "seconds" in mode:
            return float(mode["seconds"]) + EVALUATE_S
        return from_quality(dose, what, backend, target)

    return estimate


def make_plan(
    doses: Sequence[str], kinds: dict[str, dict[str, Any]], quick: bool, previous: dict[str, Any]
) -> Plan:
    """Every step of a run, in order, with an estimate of its wall time where one is known."""
    plan = Plan(list(doses), kinds, quick)
    estimate = _estimates(previous, quick)
    targets, exports = hybrid_targets(kinds), export_targets(kinds)
    for dose in doses:
        plan.steps += [Step(dose, "simulate", "", 2 * SIMULATE_S)]
        for name in plan.runnable:
            plan.steps.append(Step(dose, "train", name, estimate(dose, "train", name)))
        for name in plan.runnable:
            plan.steps.append(Step(dose, "single", name, estimate(dose, "single", name)))
            if kinds[name]["kind"] != NETWORK:
                continue
            if not quick:
                sizing = estimate(dose, "refine-sizing", name)
                plan.steps.append(Step(dose, "refine-sizing", name, sizing))
            plan.steps.append(Step(dose, "refined", name, estimate(dose, "refined", name)))
            for target in targets:
                seconds = estimate(dose, "hybrid", name, target)
                plan.steps.append(Step(dose, f"hybrid:{target}", name, seconds))
            for target in exports:
                seconds = estimate(dose, "export", name, target)
                plan.steps.append(Step(dose, f"export:{target}", name, seconds))
    return plan


def describe_plan(plan: Plan, timeout: float) -> str:
    """The schedule as text: one line per step, then the total."""
    lines = ["backends:"]
    for name, info in plan.kinds.items():
        lines.append(f"  {name:<16} {info.get('kind') or info.get('error')}")
    lines.append("schedule (estimated wall time of each step):")
    for step in plan.steps:
        seconds = "?" if step.estimate_s is None else f"{step.estimate_s:.0f} s"
        label = f"{step.what} {step.backend}".strip()
        lines.append(f"  {step.dose:>5}  {label:<34} {seconds:>8}")
    known = sum(s.estimate_s for s in plan.steps if s.estimate_s is not None)
    unknown = sum(s.estimate_s is None for s in plan.steps)
    total = f"estimated total: {known / 60:.0f} min"
    if unknown:
        total += (
            f" + {unknown} step(s) never measured here (each stops after at most "
            f"{timeout / 60:.0f} min)"
        )
    lines.append(total)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def _failure(command: str, error: str) -> dict[str, Any]:
    return {"command": command, "error": error}


def _simulate(folder: Path, dose: str, quick: bool, timeout: float) -> list[str]:
    commands = []
    for split in ("train", "test"):
        args = ["simulate", str(folder / f"{split}.npz"), "--split", split, "--nphotons", dose]
        if quick:
            args += ["--n-positions", str(QUICK[f"{split}_positions"])]
        ptycho(*args, timeout=timeout)
        commands.append(command_line(args))
    return commands


def _measure(
    args: Sequence[str], out: Path, test: Path, timeout: float, **extra: Any
) -> dict[str, Any]:
    """``ptycho infer ARGS`` then ``ptycho evaluate``; a failure is recorded, not raised."""
    command = command_line(args)
    try:
        seconds, _ = ptycho(*args, timeout=timeout)
        metrics = evaluate(out / "reconstruction.npz", test, timeout=timeout)
    except CommandFailed as failure:
        return {**_failure(command, failure.error_line), **extra}
    return {"command": command, "seconds": round(seconds, 1), "metrics": metrics, **extra}


def _train(
    name: str, kind: str, data: Path, folder: Path, dose: str, quick: bool, timeout: float
) -> dict[str, Any]:
    args = ["train", str(data), "--backend", name, "--output-dir", str(folder / "train")]
    args += ["--nphotons", dose]
    if kind == NETWORK:
        args += network_train_args(quick)
    command = command_line(args)
    try:
        seconds, _ = ptycho(*args, timeout=timeout)
    except CommandFailed as failure:
        return _failure(command, failure.error_line)
    return {
        "command": command,
        "seconds": round(seconds, 1),
        "bundle": str(folder / "train" / "model.ptycho"),
    }


def _refine(
    bundle: str, test: Path, folder: Path, single_s: float, quick: bool, timeout: float
) -> tuple[dict[str, Any], float | None]:
    """The refined mode; K sized to the budget from one- and three-epoch runs (not in quick)."""
    sizing_s = None
    epochs = 1
    if not quick:
        timed = []
        for k in (1, 3):
            args = ["infer", bundle, str(test), "--output-dir", str(folder / f"refine-{k}")]
            try:
                seconds, _ = ptycho(*args, "--refine-epochs", str(k), timeout=timeout)
            except CommandFailed as failure:
                return _failure(
                    command_line([*args, "--refine-epochs", str(k)]), failure.error_line
                ), None
            timed.append(seconds)
        sizing_s = round(sum(timed), 1)
        epochs = refine_epochs_for_budget(timed[0], timed[1], single_s, REFINE_BUDGET_S)
    args = ["infer", bundle, str(test), "--output-dir", str(folder / "refined")]
    args += ["--refine-epochs", str(epochs)]
    return _measure(args, folder / "refined", test, timeout, epochs=epochs), sizing_s


def measure_dose(
    dose: str, plan: Plan, work: Path, timeout: float, echo: Any = print
) -> dict[str, Any]:
    """Every backend of ``plan`` at one dose: simulate, train each, then infer every mode."""
    quick, kinds = plan.quick, plan.kinds
    data = work / dose / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    entry: dict[str, Any] = {"backends": {}}
    echo(f"[{dose}] simulating the training and test data")
    try:
        entry["data_commands"] = _simulate(data, dose, quick, timeout)
    except CommandFailed as failure:
        entry["data_error"] = failure.error_line
        for name in kinds:
            entry["backends"][name] = {"error": f"no data: {failure.error_line}"}
        return entry
    train, test = data / "train.npz", data / "test.npz"
    backends: dict[str, dict[str, Any]] = entry["backends"]
    for name, info in kinds.items():
        if "kind" not in info:
            backends[name] = {"error": info["error"], "measured": _now()}
            continue
        if info["kind"] == DEPLOYMENT:  # measured through the networks' exports
            continue
        folder = work / dose / name
        if folder.exists():
            shutil.rmtree(folder)
        echo(f"[{dose}] training {name} ({info['kind']})")
        backends[name] = {
            "kind": info["kind"],
            "measured": _now(),
            "train": _train(name, info["kind"], train, folder, dose, quick, timeout),
            "modes": {},
        }
    targets = hybrid_targets(kinds)
    for name, result in backends.items():
        if "train" not in result:
            continue
        trained = result["train"]
        modes = result["modes"]
        if "error" in trained:
            modes["single"] = _failure(trained["command"], f"training failed: {trained['error']}")
            continue
        folder, bundle = work / dose / name, trained["bundle"]
        echo(f"[{dose}] reconstructing with {name}")
        args = ["infer", bundle, str(test), "--output-dir", str(folder / "single")]
        modes["single"] = _measure(args, folder / "single", test, timeout)
        if result["kind"] != NETWORK:
            continue
        echo(f"[{dose}] refining {name} on the test scan")
        single_s = modes["single"].get("seconds", 0.0)
        modes["refined"], sizing_s = _refine(bundle, test, folder, single_s, quick, timeout)
        if sizing_s is not None:
            result["refine_sizing_seconds"] = sizing_s
        for target in targets:
            solver = backends.get(target, {}).get("train", {})
            then = solver.get("bundle", target)  # its trained bundle, else its name
            echo(f"[{dose}] {name} then {target}")
            out = folder / f"hybrid-{target}"
            args = ["infer", bundle, str(test), "--output-dir", str(out), "--then", then]
            mode = _measure(args, out, test, timeout, then=target, then_bundle="bundle" in solver)
            modes[f"hybrid:{target}"] = mode
        for target in export_targets(kinds):
            echo(f"[{dose}] {name} exported to {target}")
            modes[f"export:{target}"] = _exported(bundle, target, test, folder, timeout)
    return entry


def _exported(bundle: str, target: str, test: Path, folder: Path, timeout: float) -> dict[str, Any]:
    """``ptycho export`` of a network's bundle to ``target``, then the export measured alone
    (its time is the inference's; the one-off export is recorded beside it)."""
    from ptycho_core.convert import EXPORT_FORMATS

    formats = [name for name, backend in EXPORT_FORMATS.items() if backend == target]
    out = folder / f"export-{target}"
    exported = out / "model.ptycho"
    args = ["export", bundle, "--format", formats[0] if formats else target]
    args += ["--output", str(exported)]
    try:
        out.mkdir(parents=True, exist_ok=True)
        export_s, _ = ptycho(*args, timeout=timeout)
    except CommandFailed as failure:
        return {**_failure(command_line(args), failure.error_line), "export": target}
    infer_args = ["infer", str(exported), str(test), "--output-dir", str(out / "single")]
    return _measure(
        infer_args,
        out / "single",
        test,
        timeout,
        export=target,
        export_command=command_line(args),
        export_seconds=round(export_s, 1),
    )


def run(
    work: Path,
    doses: Sequence[str],
    wanted: Sequence[str] | None,
    quick: bool,
    timeout: float,
    echo: Any = print,
) -> Path:
    """Measure, store the results; a full run also rewrites the tables and the figure."""
    store = work / QUICK_RESULTS_NAME if quick else RESULTS
    previous = json.loads(store.read_text()) if store.exists() else {}
    listing, kinds = discover(wanted)
    plan = make_plan(doses, kinds, quick, previous)
    echo(describe_plan(plan, timeout))

    results = previous
    started = _now()
    results.update(quick=quick, machine=machine(), started=started)
    versions = results.setdefault("backends", {})
    for info in listing:
        if info["name"] in kinds and "kind" in kinds[info["name"]]:
            versions[info["name"]] = {
                "distribution": info["distribution"],
                "version": info["version"],
                **kinds[info["name"]],
            }
    for dose in doses:
        measured = measure_dose(dose, plan, work, timeout, echo)
        entry = results.setdefault("doses", {}).setdefault(dose, {"backends": {}})
        entry["backends"].update(measured.pop("backends"))
        entry.update(measured)
        results["finished"] = _now()
        save_json(store, portable(results, work))
    echo(f"wrote {store}")
    if not quick:  # from what was stored: the documents name no folder of this machine
        write_tables(portable(results, work), DOCS, FIGURE)
        echo(f"rewrote the compare tables in {', '.join(str(d) for d in DOCS)} and {FIGURE}")
    return store


# ----------------------------------------------------------------------------- tables


MODE_LABELS = {"single": "single pass", "refined": "refined on the test scan"}


def rows(results: dict[str, Any], dose: str) -> list[dict[str, Any]]:
    """One row per backend and mode at ``dose``: its labels, times and metrics (or error)."""
    backends = results.get("doses", {}).get(dose, {}).get("backends", {})
    out = []
    for name in sorted(backends):
        result = backends[name]
        if "modes" not in result:
            out.append({"backend": name, "mode": "single", "label": "—", "error": result["error"]})
            continue
        train = result["train"]
        for mode in sorted(result["modes"], key=_mode_order):
            entry = result["modes"][mode]
            row: dict[str, Any] = {"backend": name, "mode": mode}
            if mode.startswith("export:"):
                row["label"] = f"exported to `{entry.get('export', mode.split(':', 1)[1])}`"
            elif mode.startswith("hybrid:"):
                target = entry.get("then", mode.split(":", 1)[1])
                how = "trained" if entry.get("then_bundle") else "by name"
                row["label"] = f"then `{target}` ({how})"
                row["target"] = target
            elif mode == "single" and result["kind"] != NETWORK:
                row["label"] = "alone"
            else:
                row["label"] = MODE_LABELS.get(mode, mode)
            if "epochs" in entry:
                row["label"] += f", {entry['epochs']} epoch{'s' * (entry['epochs'] != 1)}"
            if "error" in entry:
                row["error"] = entry["error"]
                out.append(row)
                continue
            train_s = float(train["seconds"])
            if entry.get("then_bundle"):
                train_s += float(backends[row["target"]]["train"]["seconds"])
            row.update(
                train_s=train_s,
                infer_s=float(entry["seconds"]),
                total_s=train_s + float(entry["seconds"]),
                metrics=entry["metrics"],
            )
            out.append(row)
    return out


_HEADER = (
    "| backend | mode | train (s) | infer (s) | amp SSIM | phase SSIM | amp PSNR (dB) "
    "| phase PSNR (dB) | FRC half-bit (px) |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dose_table(results: dict[str, Any], dose: str) -> str:
    lines = [_HEADER]
    for row in rows(results, dose):
        head = f"| `{row['backend']}` | {row['label']} |"
        if "error" in row:
            lines.append(f"{head} failed | — | {_cell(row['error'])} | | | | |")
            continue
        m = row["metrics"]
        lines.append(
            f"{head} {row['train_s']:.1f} | {row['infer_s']:.1f} | {m['amplitude_ssim']:.3f} | "
            f"{m['phase_ssim']:.3f} | {m['amplitude_psnr']:.1f} | {m['phase_psnr']:.1f} | "
            f"{m['frc_half_bit']:.1f} |"
        )
    return "\n".join(lines)


def _doses(results: dict[str, Any]) -> list[str]:
    return sorted(results.get("doses", {}), key=float, reverse=True)


def results_block(results: dict[str, Any], figure: str) -> str:
    """The figure and one table per dose, with what was measured on what."""
    parts = [f"![Quality against wall time of every backend and mode]({figure})", ""]
    for dose in _doses(results):
        parts += [f"At {dose} photons per pattern:", "", dose_table(results, dose), ""]
    versions = ", ".join(
        f"`{name}` ({info['distribution']} {info['version']})"
        for name, info in sorted(results.get("backends", {}).items())
    )
    parts.append(
        f"Measured on: {results.get('machine', 'unknown')}, finished "
        f"{results.get('finished', 'unknown')}; backends: {versions}."
    )
    return "\n".join(parts)


def commands_block(results: dict[str, Any]) -> str:
    lines = ["```sh"]
    for dose in _doses(results):
        entry = results["doses"][dose]
        lines += entry.get("data_commands", [])
        for name in sorted(entry.get("backends", {})):
            result = entry["backends"][name]
            if "train" in result:
                lines.append(result["train"]["command"])
            lines += [mode["command"] for mode in result.get("modes", {}).values()]
    lines.append("```")
    return "\n".join(lines)


def blocks_for(results: dict[str, Any], doc: Path, figure: Path) -> dict[str, str]:
    """The generated blocks of ``doc`` (the figure linked relative to it)."""
    link = Path(os.path.relpath(figure.resolve(), doc.resolve().parent)).as_posix()
    return {"results": results_block(results, link), "commands": commands_block(results)}


def draw_figure(results: dict[str, Any], path: Path) -> None:
    """Amplitude and phase SSIM against total wall time (log axis), one colour per
    backend, one marker per mode, filled for the highest dose and hollow for the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    doses = _doses(results)
    every = {dose: [r for r in rows(results, dose) if "error" not in r] for dose in doses}
    names = sorted({r["backend"] for dose_rows in every.values() for r in dose_rows})
    colours = {name: f"C{i % 10}" for i, name in enumerate(names)}
    modes = sorted({r["mode"] for dose_rows in every.values() for r in dose_rows}, key=_mode_order)
    shapes = "o^sDPXv<>ph*"
    markers = {mode: shapes[i % len(shapes)] for i, mode in enumerate(modes)}
    fills = ["full", "none", "left", "bottom", "right", "top"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharex=True)
    for axis, key, title in zip(
        axes, ("amplitude_ssim", "phase_ssim"), ("amplitude SSIM", "phase SSIM"), strict=True
    ):
        for i, dose in enumerate(doses):
            for row in every[dose]:
                axis.plot(
                    row["total_s"],
                    row["metrics"][key],
                    linestyle="none",
                    marker=markers[row["mode"]],
                    markersize=8,
                    color=colours[row["backend"]],
                    fillstyle=fills[i % len(fills)],
                )
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        axis.set_xlabel("wall time: training + reconstruction (s)")
        axis.set_ylabel(title)
        axis.set_title(f"{title}, held-out test object")
        axis.grid(True, which="both", alpha=0.3)
    handles = [
        Line2D([], [], color=colours[n], marker="o", linestyle="none", label=n) for n in names
    ]
    handles += [
        Line2D([], [], color="0.4", marker=markers[m], linestyle="none", label=_mode_name(m))
        for m in modes
    ]
    handles += [
        Line2D(
            [],
            [],
            color="0.4",
            marker="o",
            linestyle="none",
            fillstyle=fills[i % len(fills)],
            label=f"{dose} photons",
        )
        for i, dose in enumerate(doses)
    ]
    figure.legend(handles=handles, loc="center right", fontsize="small", frameon=False)
    figure.subplots_adjust(left=0.07, right=0.80, bottom=0.13, top=0.92, wspace=0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _minor_label(value: float, _: int) -> str:
    """Label the minor ticks 2 and 5 of each decade only, so labels never overlap."""
    digit = f"{value:.0e}"[0]
    return f"{value:g}" if digit in "25" else ""


def _mode_order(mode: str) -> tuple[int, str]:
    return ({"single": 0, "refined": 1}.get(mode, 2), mode)


def _mode_name(mode: str) -> str:
    if mode.startswith("hybrid:"):
        return f"then {mode.split(':', 1)[1]}"
    return MODE_LABELS.get(mode, mode)


def write_tables(results: dict[str, Any], docs: Sequence[Path], figure: Path) -> None:
    """Rewrite the compare blocks of ``docs`` and draw ``figure``.

    Refuses results of a ``--quick`` run for the repository's own documents or figure.
    """
    if results.get("quick"):
        own = {p.resolve() for p in (*DOCS, FIGURE)}
        clash = [str(p) for p in (*docs, figure) if p.resolve() in own]
        if clash:
            raise SystemExit(
                "these are --quick results; they never go into "
                + ", ".join(clash)
                + ": give scratch copies with --docs and --figure"
            )
    draw_figure(results, figure)
    for doc in docs:
        write_blocks(doc, "compare", blocks_for(results, doc, figure))


# ----------------------------------------------------------------------------- main


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--doses",
        nargs="+",
        default=list(DEFAULT_DOSES),
        type=_dose,
        metavar="PHOTONS",
        help="photons per pattern, e.g. 1e9 1e4 (the default)",
    )
    parser.add_argument(
        "--backends", nargs="+", metavar="NAME", help="default: every usable installed backend"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"tiny settings ({QUICK['train_positions']} training positions, "
        f"{QUICK['epochs']} epoch): check the script; results never reach the docs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"a command running longer fails (default {DEFAULT_TIMEOUT_S:.0f})",
    )


def _dose(text: str) -> str:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected photons per pattern > 0, found {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="measure, store the results, rewrite the tables")
    run_parser.add_argument("--workdir", type=Path, default=Path("compare-runs"))
    _add_selection(run_parser)
    plan_parser = sub.add_parser("plan", help="print the backends and the estimated schedule")
    _add_selection(plan_parser)
    tables_parser = sub.add_parser("tables", help="rewrite the tables and the figure")
    tables_parser.add_argument("--results", type=Path, default=RESULTS, help="results JSON")
    tables_parser.add_argument("--docs", type=Path, nargs="+", default=list(DOCS))
    tables_parser.add_argument("--figure", type=Path, default=FIGURE)
    classify_parser = sub.add_parser("classify", help="print each backend's kind as JSON")
    classify_parser.add_argument("names", nargs="+", metavar="NAME")
    args = parser.parse_args(argv)
    if args.command == "classify":
        print(json.dumps(classify_names(args.names), indent=2, sort_keys=True))
    elif args.command == "plan":
        _, kinds = discover(args.backends)
        previous = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.quick else {}
        print(describe_plan(make_plan(args.doses, kinds, args.quick, previous), args.timeout))
    elif args.command == "run":
        run(args.workdir, args.doses, args.backends, args.quick, args.timeout)
    else:
        write_tables(json.loads(args.results.read_text()), args.docs, args.figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())

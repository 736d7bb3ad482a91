"""Argument parsing, dispatch and error reporting of the ``ptycho`` command.

User errors (bad files, unknown or unusable backends, invalid options: every
:class:`~ptycho_core.errors.PtychoError`) end the process with status 2 and one line on
stderr; ``--traceback`` shows their stack for bug reports. Any other exception is a bug
and keeps its traceback. Heavy modules are imported inside the commands that need them, so
``ptycho backends`` stays fast and never imports a framework.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ptycho_core._version import __version__
from ptycho_core.config import ACCELERATORS, PRECISIONS, InferenceConfig, TrainingConfig
from ptycho_core.errors import ConfigError, PtychoError

__all__ = ["build_parser", "main", "option_value", "parse_options"]

EXIT_USER_ERROR = 2
BUNDLE_NAME = "model.ptycho"
REFINED_BUNDLE_NAME = "model-refined.ptycho"
HISTORY_NAME = "history.json"


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats by strings so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else "nan"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_json_safe(value), indent=2, sort_keys=True, allow_nan=False))


def _progress(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from ptycho_core.cli.progress import ProgressBars
    from ptycho_core.hooks import make_plugin_manager

    return make_plugin_manager(ProgressBars(enabled=not args.quiet)).hook


def _devices(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, found {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def option_value(text: str) -> bool | int | float | str:
    """The value of ``--option NAME=VALUE``: a JSON scalar when ``text`` is one, else ``text``.

    ``true``/``false``, numbers and ``"quoted strings"`` are read as JSON; anything else
    (including ``null``, arrays, objects, ``NaN`` and numbers too large to be finite) is
    taken as the raw string.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return text
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value if isinstance(value, bool | int | float | str) else text


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def parse_options(items: Sequence[str] | None) -> dict[str, Any]:
    """``--option NAME=VALUE`` items as a mapping; values as :func:`option_value` reads them.

    An item without ``=`` or with an empty NAME, and a NAME given twice, raise
    :class:`~ptycho_core.errors.ConfigError`. Names and values are checked further by the
    config that receives them and by the backend.
    """
    options: dict[str, Any] = {}
    for item in items or ():
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--option: expected NAME=VALUE, found {item!r}")
        if name in options:
            raise ConfigError(
                f"--option: expected each NAME once, found {name!r} twice "
                f"({name}={options[name]!r} and {item!r})"
            )
        options[name] = option_value(text)
    return options


# -- commands -------------------------------------------------------------------------


def cmd_backends(args: argparse.Namespace) -> int:
    from ptycho_core.backend_selector import available_backends, describe_backends

    infos = available_backends(verify=args.verify)
    if args.json:
        _print_json([info.to_dict() for info in infos])
    else:
        print(describe_backends(infos))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ptycho_core.data import save_npz
    from ptycho_core.simulate import SimulationConfig, default_dataset, simulate

    if args.config is not None:
        config = SimulationConfig.from_file(args.config)
        data = simulate(config)
    else:
        data = default_dataset(
            args.split,
            N=args.N,
            n_positions=args.n_positions,
            seed=args.seed,
            nphotons=args.nphotons,
            n_objects=args.n_objects,
        )
    save_npz(data, args.output)
    print(
        f"wrote {args.output}: {data.n_positions} patterns of {data.N}×{data.N}, "
        f"object {data.object.shape if data.object is not None else 'none'}"
    )
    return 0


def _training_config(args: argparse.Namespace) -> TrainingConfig:
    base = TrainingConfig.from_file(args.config) if args.config is not None else TrainingConfig()
    model_changes = {
        key: value
        for key, value in {
            "gridsize": args.gridsize,
            "model_type": args.model_type,
            "n_filters_scale": args.n_filters_scale,
        }.items()
        if value is not None
    }
    changes = {
        key: value
        for key, value in {
            "backend": args.backend,
            "nepochs": args.epochs,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "n_groups": args.n_groups,
            "nphotons": args.nphotons,
            "learning_rate": args.learning_rate,
            "precision": args.precision,
            "accelerator": args.accelerator,
            "devices": args.devices,
            "strategy": args.strategy,
            "num_nodes": args.num_nodes,
        }.items()
        if value is not None
    }
    if args.all_groups:
        changes["n_groups"] = None
    model = base.model.replace(**model_changes) if model_changes else base.model
    options = parse_options(args.option)
    if options:  # each --option replaces the config file's entry of that name
        changes["backend_options"] = {**base.backend_options, **options}
    return base.replace(
        model=model,
        train_data_file=str(args.data),
        output_dir=str(args.output_dir),
        **changes,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from ptycho_core.outputs import output_set, prepare_output_dir
    from ptycho_core.workflows import (
        check_backend_options,
        save_model,
        summarize_history,
        train_cdi_model,
    )

    config = _training_config(args)
    check_backend_options(config.backend, config.backend_options, "training")  # before the data
    output = prepare_output_dir(args.output_dir)  # before the compute, not after it
    results = train_cdi_model(_dataset(args), None, config, hooks=_progress(args))
    model = results["model"]
    if _is_primary_process():
        with output_set(output) as stage:
            save_model(model, stage / BUNDLE_NAME)
            history = json.dumps(_json_safe(dict(model.history)), indent=2)
            (stage / HISTORY_NAME).write_text(history)
        final = ", ".join(f"{k} {v:.4g}" for k, v in summarize_history(model.history).items())
        print(f"trained {model.backend} model on {results['train_data'].n_groups} groups ({final})")
        print(f"wrote {output / BUNDLE_NAME}, {HISTORY_NAME}")
    return 0


def _is_primary_process() -> bool:
    """False in the extra ranks a multi-process strategy (e.g. DDP) launches."""
    return all(os.environ.get(name, "0") == "0" for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def cmd_infer(args: argparse.Namespace) -> int:
    from ptycho_core.bundle import BUNDLE_EXTENSION
    from ptycho_core.cli.figures import save_image
    from ptycho_core.outputs import output_set, prepare_output_dir
    from ptycho_core.protocol import SupportsInitialObject
    from ptycho_core.results import save_reconstruction
    from ptycho_core.workflows import (
        check_backend_options,
        load_inference_bundle,
        reconstruct,
        reconstruct_hybrid,
        require_capability,
    )

    if args.nphotons is not None and not args.refine_epochs:
        raise ConfigError("--nphotons sets the photons of a refinement; give --refine-epochs K > 0")
    options = parse_options(args.option)  # for the backend that reconstructs last
    output = prepare_output_dir(args.output_dir)
    model, _ = load_inference_bundle(args.bundle, backend=args.backend)
    then = None
    if args.then is not None:  # checked first: a refinement must not run for nothing
        is_bundle = args.then.endswith(BUNDLE_EXTENSION)
        then = load_inference_bundle(args.then)[0] if is_bundle else args.then
        require_capability(then if isinstance(then, str) else then.backend, SupportsInitialObject)
    # refused before a refinement or a first pass runs for nothing
    check_backend_options(model.backend if then is None else _name(then), options, "inference")
    hooks = _progress(args)
    changes = {
        key: value
        for key, value in {
            "batch_size": args.batch_size,
            "stitch_size": args.stitch_size,
            "n_groups": args.n_groups,
            "precision": args.precision,
            "accelerator": args.accelerator,
            "devices": args.devices,
            "iterations": args.iterations if then is None else None,
            "backend_options": options if then is None else None,
        }.items()
        if value is not None
    }
    written = ["reconstruction.npz", "amplitude.png", "phase.png"]
    data = _dataset(args)
    with output_set(output) as stage:
        if args.refine_epochs:
            model = _refine(args, model, data, stage, hooks)
            written.append(REFINED_BUNDLE_NAME)
        config = InferenceConfig(
            backend=model.backend,
            model_path=str(args.bundle),
            test_data_file=str(args.data),
            output_dir=str(args.output_dir),
            **changes,
        )
        if then is None:
            result = reconstruct(model, data, config, hooks=hooks)
            how = result.backend
        else:
            first, result = reconstruct_hybrid(
                model,
                data,
                then,
                iterations=args.iterations,
                config=config,
                hooks=hooks,
                then_options=options,
            )
            initial = Path("initial") / "reconstruction.npz"
            save_reconstruction(first.stitched, stage / initial, backend=first.backend)
            how = f"{first.backend}, then {result.backend} from that object ({output / initial})"
            written.append(initial.as_posix())
        save_reconstruction(result.stitched, stage / "reconstruction.npz", backend=result.backend)
        save_image(result.amplitude, stage / "amplitude.png", title="amplitude", cmap="gray")
        save_image(result.phase, stage / "phase.png", title="phase", cmap="twilight")
    print(
        f"reconstructed {result.n_groups} groups with {how}; wrote {', '.join(written)} in {output}"
    )
    return 0


def _dataset(args: argparse.Namespace) -> Any:
    """``args.data`` as the workflows take it: the path, or the dataset read with ``--layout``."""
    from ptycho_core.data import load_npz

    return args.data if args.layout == "ptycho" else load_npz(args.data, layout=args.layout)


def _name(then: Any) -> str:
    """The backend of ``--then``: a name, or the backend of a loaded bundle."""
    return then if isinstance(then, str) else then.backend


def _refine(args: argparse.Namespace, model: Any, data: Any, stage: Path, hooks: Any) -> Any:
    """``ptycho infer --refine-epochs``: refine on the data; the new model joins the outputs."""
    from ptycho_core.workflows import refine_model, refinement_config, save_model

    config = refinement_config(model, args.refine_epochs)
    if args.nphotons is not None:
        config = config.replace(nphotons=args.nphotons)
    refined = refine_model(model, data, epochs=args.refine_epochs, config=config, hooks=hooks)
    save_model(refined, stage / REFINED_BUNDLE_NAME)
    losses = refined.history.get("loss", [])
    final = f"final loss {float(losses[-1]):.4g}" if len(losses) else "no loss reported"
    print(
        f"refined the {refined.backend} model on {args.data} for {len(losses)} epochs "
        f"({final}); it is saved as {REFINED_BUNDLE_NAME}"
    )
    return refined


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ptycho_core.data import load_npz
    from ptycho_core.results import evaluate_stitched, load_reconstruction

    metrics = evaluate_stitched(load_reconstruction(args.reconstruction), load_npz(args.data))
    if args.json:
        _print_json(metrics)
    else:
        width = max(map(len, metrics))
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value:.4f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from ptycho_core.bench import BenchSettings, run_benchmark

    given = {
        "N": args.N,
        "gridsize": args.gridsize,
        "n_patterns": args.n_patterns,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "train_groups": args.train_groups,
        "precision": args.precision,
        "accelerator": args.accelerator,
        "n_filters_scale": args.n_filters_scale,
        "backend_options": parse_options(args.option) or None,
    }
    settings = BenchSettings(**{k: v for k, v in given.items() if v is not None})
    report = run_benchmark(args.backend, settings)
    if args.json:
        _print_json(report)
    else:
        for name, value in report.items():
            shown = f"{value:.4g}" if isinstance(value, float) else value
            print(f"{name:<28} {shown}")
    return 0


def cmd_check_backend(args: argparse.Namespace) -> int:
    from ptycho_core.backend_selector import select_backend
    from ptycho_core.testing import check_backend

    select_backend(args.backend)  # an unknown or unusable backend is a user error (exit 2)
    report = check_backend(args.backend, N=args.N, gridsize=args.gridsize, checks=args.check)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report)
    return 0 if report.passed else 1


def cmd_convert(args: argparse.Namespace) -> int:
    from ptycho_core.bundle import read_manifest
    from ptycho_core.convert import convert_bundle

    source = read_manifest(args.bundle)["backend"]
    model = convert_bundle(args.bundle, args.to, args.output)
    print(
        f"converted {args.bundle} from backend {source!r} to {model.backend!r}; wrote {args.output}"
    )
    return 0


def cmd_import_upstream(args: argparse.Namespace) -> int:
    from ptycho_core.convert import import_upstream

    model = import_upstream(
        args.archive, args.output, backend=args.backend, ignore=args.ignore_setting or ()
    )
    model_config = model.config.model
    print(
        f"imported {args.archive} (upstream PtychoPINN, N={model_config.N}, gridsize="
        f"{model_config.gridsize}, n_filters_scale={model_config.n_filters_scale}) as backend "
        f"{model.backend!r}; wrote {args.output}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ptycho_core.bundle import read_manifest
    from ptycho_core.convert import export_bundle

    source = read_manifest(args.bundle)["backend"]
    model = export_bundle(args.bundle, args.format, args.output, options=parse_options(args.option))
    print(
        f"exported {args.bundle} (backend {source!r}) as {args.format}; wrote {args.output} "
        f"(backend {model.backend!r})"
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ptycho_core.demo import run_demo

    run_demo(
        backend=args.backend,
        output_dir=Path(args.output_dir),
        epochs=args.epochs,
        n_groups=args.n_groups,
        nphotons=args.nphotons,
        precision=args.precision,
        hooks=_progress(args),
        backend_options=parse_options(args.option),
    )
    return 0


# -- parser ---------------------------------------------------------------------------


def _add_backend_option(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--option", action="append", metavar="NAME=VALUE", help=help)


def _add_layout_option(parser: argparse.ArgumentParser) -> None:
    from ptycho_core.data import LAYOUTS

    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="ptycho",
        help="how DATA.npz is laid out: ptycho's data contract (default) or upstream "
        "PtychoPINN's (diff3d holds amplitudes; positions from xcoords_start/ycoords_start)",
    )


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, help="groups per step")
    parser.add_argument("--precision", choices=PRECISIONS, help="numeric precision")
    parser.add_argument("--accelerator", choices=ACCELERATORS, help="device kind")
    parser.add_argument("--devices", type=_devices, help="number of devices, or 'auto'")
    parser.add_argument("--n-groups", type=int, help="number of groups (default: see specs/cli.md)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``ptycho`` argument parser (documented in specs/cli.md)."""
    parser = argparse.ArgumentParser(
        prog="ptycho",
        description="Physics-informed neural-network ptychography on any backend.",
    )
    parser.add_argument("--version", action="version", version=f"ptycho {__version__}")
    parser.add_argument("--traceback", action="store_true", help="show the stack on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backends = commands.add_parser("backends", help="list installed backends and whether they work")
    backends.add_argument("--json", action="store_true", help="machine-readable output")
    backends.add_argument(
        "--verify",
        action="store_true",
        help="also import every backend that looks usable (imports frameworks) to catch import errors",
    )
    backends.set_defaults(run=cmd_backends)

    simulate = commands.add_parser("simulate", help="write a simulated dataset (NPZ)")
    simulate.add_argument("output", type=Path, metavar="OUT.npz")
    simulate.add_argument(
        "--split", choices=("train", "test"), default="train", help="which default object"
    )
    simulate.add_argument("-N", "--N", type=int, default=64, help="pattern size")
    simulate.add_argument("--n-positions", type=int, help="number of scan positions")
    simulate.add_argument("--seed", type=int, help="random seed (default: the split's own)")
    simulate.add_argument(
        "--nphotons", type=float, default=1e9, help="mean photons per pattern (default 1e9)"
    )
    simulate.add_argument(
        "--n-objects", type=int, default=1, help="objects side by side, each scanned (default 1)"
    )
    simulate.add_argument("--config", type=Path, help="JSON SimulationConfig (overrides the above)")
    simulate.set_defaults(run=cmd_simulate)

    train = commands.add_parser("train", help="train a model and save a bundle")
    train.add_argument("data", type=Path, metavar="DATA.npz")
    train.add_argument("--backend", help=f"backend name (default: {TrainingConfig().backend})")
    train.add_argument("--output-dir", type=Path, required=True, help="where model.ptycho goes")
    train.add_argument("--config", type=Path, help="TrainingConfig JSON; flags override it")
    train.add_argument("--epochs", type=int, help="maximum epochs")
    train.add_argument("--gridsize", type=int, help="patterns per group side")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--nphotons", type=float, help="photons per pattern (Poisson scale)")
    train.add_argument("--learning-rate", type=float, help="Adam learning rate")
    train.add_argument("--model-type", choices=("pinn", "supervised"), help="loss kind")
    train.add_argument("--n-filters-scale", type=int, help="filter multiplier")
    train.add_argument("--all-groups", action="store_true", help="one group per scan position")
    train.add_argument("--strategy", help="multi-device strategy, e.g. ddp")
    train.add_argument("--num-nodes", type=int, help="machines taking part")
    _add_backend_option(
        train,
        'backend option for training (repeatable; VALUE is JSON true/false/number/"string", '
        "else a raw string); overrides the --config entry of that NAME",
    )
    _add_runtime_options(train)
    _add_layout_option(train)
    train.set_defaults(run=cmd_train)

    infer = commands.add_parser("infer", help="reconstruct a dataset with a trained bundle")
    infer.add_argument("bundle", type=Path, metavar="BUNDLE")
    infer.add_argument("data", type=Path, metavar="DATA.npz")
    infer.add_argument("--output-dir", type=Path, required=True, help="where outputs go")
    infer.add_argument("--backend", help="require this backend (default: the bundle's)")
    infer.add_argument("--stitch-size", type=int, help="central crop M used for stitching")
    infer.add_argument(
        "--refine-epochs",
        type=_at_least(0),
        default=0,
        metavar="K",
        help="first refine the model on DATA for K epochs (self-supervised; 0: no refinement)",
    )
    infer.add_argument(
        "--nphotons", type=float, help="photons per pattern of DATA for the refinement"
    )
    infer.add_argument(
        "--then",
        metavar="NAME_OR_BUNDLE",
        help="then run this iterative backend (a name, or a .ptycho bundle) from the result",
    )
    infer.add_argument(
        "--iterations",
        type=_at_least(1),
        metavar="N",
        help="iterations of the iterative backend (default: the model's own, 50 for --then NAME)",
    )
    _add_backend_option(
        infer,
        "backend option for the reconstruction (repeatable): of the --then backend when "
        "given, else of the bundle's backend",
    )
    _add_runtime_options(infer)
    _add_layout_option(infer)
    infer.set_defaults(run=cmd_infer)

    evaluate = commands.add_parser("evaluate", help="compare a reconstruction with objectGuess")
    evaluate.add_argument("reconstruction", type=Path, metavar="RECONSTRUCTION.npz")
    evaluate.add_argument("data", type=Path, metavar="DATA.npz")
    evaluate.add_argument("--json", action="store_true", help="machine-readable output")
    evaluate.set_defaults(run=cmd_evaluate)

    bench = commands.add_parser("bench", help="measure a backend's throughput")
    bench.add_argument("--backend", required=True, help="backend name")
    bench.add_argument("--json", action="store_true", help="one JSON object")
    reference = "(default: the reference case, specs/cli.md)"
    bench.add_argument("-N", "--N", type=int, help=f"pattern size {reference}")
    bench.add_argument("--gridsize", type=int, help="patterns per group side")
    bench.add_argument("--n-patterns", type=int, help="patterns inferred end to end")
    bench.add_argument("--batch-size", type=int, help="inference batch")
    bench.add_argument("--epochs", type=int, help="training epochs timed")
    bench.add_argument("--train-groups", type=int, help="groups per training epoch")
    bench.add_argument("--precision", choices=PRECISIONS, help="numeric precision")
    bench.add_argument("--accelerator", choices=ACCELERATORS, help="device kind")
    bench.add_argument("--n-filters-scale", type=int, help="network width multiplier")
    _add_backend_option(
        bench,
        "backend option of the model measured (repeatable); for onnx its export settings, "
        "e.g. quantize=int8",
    )
    bench.set_defaults(run=cmd_bench)

    check = commands.add_parser(
        "check-backend", help="run the conformance kit on a backend (exit 1 if a check fails)"
    )
    check.add_argument("backend", metavar="NAME", help="backend name (entry point)")
    check.add_argument("-N", "--N", type=int, default=64, help="pattern size of the test data")
    check.add_argument("--gridsize", type=int, default=1, help="patterns per group side")
    check.add_argument(
        "--check",
        action="append",
        metavar="CHECK",
        help="run only this check (repeatable), e.g. infer-output",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=cmd_check_backend)

    convert = commands.add_parser(
        "convert", help="convert a trained bundle to another backend (framework-neutral weights)"
    )
    convert.add_argument("bundle", type=Path, metavar="BUNDLE")
    convert.add_argument("--to", required=True, metavar="BACKEND", help="target backend name")
    convert.add_argument(
        "--output", "-o", type=Path, required=True, metavar="OUT", help="bundle to write"
    )
    convert.set_defaults(run=cmd_convert)

    export = commands.add_parser(
        "export", help="export a trained network for deployment without a framework (ONNX)"
    )
    export.add_argument("bundle", type=Path, metavar="BUNDLE")
    export.add_argument(
        "--format", required=True, choices=("onnx",), help="deployment format: onnx"
    )
    export.add_argument(
        "--output", "-o", type=Path, required=True, metavar="OUT", help="bundle to write"
    )
    _add_backend_option(
        export,
        "export setting of the format's backend (repeatable), e.g. quantize=int8 or "
        "calibration_groups=512",
    )
    export.set_defaults(run=cmd_export)

    upstream = commands.add_parser(
        "import-upstream",
        help="import an upstream PtychoPINN model archive (wts.h5.zip) as a bundle",
    )
    upstream.add_argument("archive", type=Path, metavar="ARCHIVE")
    upstream.add_argument(
        "--output", "-o", type=Path, required=True, metavar="OUT", help="bundle to write"
    )
    upstream.add_argument(
        "--backend", help="backend of the bundle (default: tensorflow, the archive's framework)"
    )
    upstream.add_argument(
        "--ignore-setting",
        action="append",
        metavar="KEY",
        help="an unknown upstream setting to pass over, after checking it (repeatable)",
    )
    upstream.set_defaults(run=cmd_import_upstream)

    demo = commands.add_parser("demo", help="simulate → train → infer → evaluate, with a figure")
    demo.add_argument("--backend", default=TrainingConfig().backend, help="backend name")
    demo.add_argument("--output-dir", type=Path, default=Path("ptycho-demo"), help="outputs")
    demo.add_argument("--epochs", type=int, default=None, help="training epochs")
    demo.add_argument("--n-groups", type=int, default=None, help="training groups")
    demo.add_argument(
        "--nphotons", type=float, default=1e9, help="photons per simulated pattern (default 1e9)"
    )
    demo.add_argument(
        "--precision", choices=PRECISIONS, default="32", help="training precision (default 32)"
    )
    _add_backend_option(demo, "backend option for the demo's training (repeatable)")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (``ptycho`` console script entry point)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except PtychoError as error:  # the user's mistake; anything else is a bug: its stack shows
        if args.traceback:
            raise
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"ptycho {args.command}: error: {text or type(error).__name__}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"ptycho {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

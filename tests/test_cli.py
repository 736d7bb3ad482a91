"""The ``ptycho`` command, run as users run it: a real process through the console script.

The backend is the test distribution's small real numpy backend (``numpy-gain``),
installed as a separate distribution and found through its entry point.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli
from hypothesis import given
from hypothesis import strategies as st

from ptycho_core.cli.main import option_value, parse_options
from ptycho_core.data import load_npz
from ptycho_core.errors import ConfigError

TEST_BACKEND = "numpy-gain"
pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")


def run(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = run_cli(*args, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"ptycho {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def run_train(data: Path, backend: str, out: Path, *options: str, quiet: bool = True):
    """``ptycho [--quiet] train DATA --backend BACKEND --output-dir OUT --batch-size 8 OPTIONS``."""
    flags = ("--quiet",) if quiet else ()
    command = ("train", str(data), "--backend", backend, "--output-dir", str(out))
    return run(*flags, *command, "--batch-size", "8", *options)


def run_infer(bundle: Path | str, data: Path | str, out: Path, *options: str, check: bool = True):
    """``ptycho --quiet infer BUNDLE DATA --output-dir OUT OPTIONS``."""
    command = ("infer", str(bundle), str(data), "--output-dir", str(out))
    return run("--quiet", *command, *options, check=check)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cli-data")
    train, test = folder / "train.npz", folder / "test.npz"
    run("simulate", str(train), "--n-positions", "96")
    run("simulate", str(test), "--split", "test", "--n-positions", "64")
    return train, test


def test_backends_lists_installed_distributions() -> None:
    text = run("backends").stdout
    assert TEST_BACKEND in text and "ptycho-testbackends" in text
    listed = json.loads(run("backends", "--json").stdout)
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name[TEST_BACKEND]["usable"] is True
    assert by_name[TEST_BACKEND]["distribution"] == "ptycho-testbackends"
    missing = by_name["needs-missing"]
    assert missing["usable"] is False and "module unavailable" in missing["reason"]


def test_simulate_writes_a_valid_dataset(simulated: tuple[Path, Path]) -> None:
    train, test = simulated
    train_data, test_data = load_npz(train), load_npz(test)
    assert (train_data.n_positions, test_data.n_positions) == (96, 64)
    assert train_data.object is not None and test_data.object is not None
    assert train_data.object.shape != test_data.object.shape or not np.allclose(
        train_data.object, test_data.object
    )


def test_train_infer_evaluate_round_trip(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    train_path, test = simulated
    run_train(train_path, TEST_BACKEND, tmp_path / "model", "--epochs", "3", "--seed", "3")
    bundle = tmp_path / "model" / "model.ptycho"
    assert bundle.is_file()
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert len(history["loss"]) == 3

    run_infer(bundle, test, tmp_path / "recon")
    with np.load(tmp_path / "recon" / "reconstruction.npz", allow_pickle=False) as recon:
        assert recon["amplitude"].shape == recon["phase"].shape == load_npz(test).object.shape
        assert np.isfinite(recon["amplitude"]).all()
        assert str(recon["backend"]) == TEST_BACKEND
    for image in ("amplitude.png", "phase.png"):
        assert (tmp_path / "recon" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    metrics = json.loads(
        run("evaluate", str(tmp_path / "recon" / "reconstruction.npz"), str(test), "--json").stdout
    )
    for key in (
        "amplitude_ssim",
        "phase_ssim",
        "phase_ssim_upstream",
        "amplitude_psnr",
        "frc_half_bit",
    ):
        assert key in metrics
    assert -1.0 <= metrics["amplitude_ssim"] <= 1.0


def test_train_progress_bar_shows_losses(simulated: tuple[Path, Path], tmp_path: Path) -> None:
    result = run_train(simulated[0], TEST_BACKEND, tmp_path, "--epochs", "2", quiet=False)
    assert "2/2" in result.stderr and "loss=" in result.stderr


def test_user_errors_are_one_line_without_traceback(
    simulated: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = simulated
    assert_one_line_error(
        run(
            "train",
            str(train),
            "--backend",
            "no-such-backend",
            "--output-dir",
            str(tmp_path),
            check=False,
        ),
        "no-such-backend",
        TEST_BACKEND,
    )
    assert_one_line_error(
        run(
            "train",
            str(train),
            "--backend",
            "needs-missing",
            "--output-dir",
            str(tmp_path),
            check=False,
        ),
        "backend selected but",
        "module unavailable",
    )
    assert_one_line_error(
        run(
            "train",
            str(tmp_path / "absent.npz"),
            "--backend",
            TEST_BACKEND,
            "--output-dir",
            str(tmp_path),
            check=False,
        ),
        "absent.npz",
    )
    assert_one_line_error(
        run(
            "train",
            str(train),
            "--backend",
            TEST_BACKEND,
            "--batch-size",
            "3",
            "--output-dir",
            str(tmp_path),
            check=False,
        ),
        "batch_size",
    )
    not_a_bundle = tmp_path / "fake.ptycho"
    not_a_bundle.write_bytes(b"not a zip archive")
    assert_one_line_error(
        run("infer", str(not_a_bundle), str(train), "--output-dir", str(tmp_path), check=False),
        str(not_a_bundle),
    )


def test_missing_framework_fails_before_reading_data(tmp_path: Path) -> None:
    # The data file does not exist: a selector error proves selection came first.
    result = run(
        "train",
        str(tmp_path / "nothing.npz"),
        "--backend",
        "needs-missing",
        "--output-dir",
        str(tmp_path),
        check=False,
    )
    assert_one_line_error(result, "module unavailable")
    assert "nothing.npz" not in result.stderr


def test_bench_json_reports_rates_and_ratios() -> None:
    result = run(
        "bench",
        "--backend",
        TEST_BACKEND,
        "--json",
        "--n-patterns",
        "64",
        "--epochs",
        "2",
        "--train-groups",
        "64",
        "--batch-size",
        "16",
    )
    report = json.loads(result.stdout)
    for key in (
        "forward_patterns_per_s",
        "infer_patterns_per_s",
        "train_groups_per_s",
        "infer_over_forward",
    ):
        assert key in report
    assert report["infer_patterns_per_s"] > 0 and report["train_groups_per_s"] > 0
    assert report["reference_gflops"] > 0


def test_simulate_sets_dose_and_number_of_objects(tmp_path: Path) -> None:
    path = tmp_path / "two.npz"
    args = ("simulate", str(path), "-N", "32", "--n-positions", "40")
    run(*args, "--nphotons", "1e4", "--n-objects", "2")
    data = load_npz(path)
    assert data.n_positions == 80 and sorted(set(data.scan_index.tolist())) == [0, 1]
    # patterns are Poisson counts scaled to ~1e4 photons each
    assert np.mean(np.sum(data.diffraction.astype(np.float64) ** 2, axis=(1, 2))) == (
        pytest.approx(1e4, rel=0.05)
    )
    assert_one_line_error(run(*args, "--n-objects", "0", check=False), "n_objects")


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("ptycho ")
    assert "backends" in run("--help").stdout


def test_demo_runs_the_whole_pipeline(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run(
        "--quiet",
        "demo",
        "--backend",
        TEST_BACKEND,
        "--epochs",
        "2",
        "--n-groups",
        "64",
        "--output-dir",
        str(out),
    )
    assert "amplitude_ssim" in result.stdout
    for name in ("train.npz", "test.npz", "model.ptycho", "reconstruction.npz", "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"amplitude_ssim", "phase_ssim", "phase_ssim_upstream"}
    assert metrics["train_seconds"] > 0 and "trained in" in result.stdout


# ----------------------------------------------------------------------- optional capabilities


@pytest.fixture(scope="module")
def bundles(simulated: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Bundles of numpy-gain (has a warm start, no initial object) and direct-zero (neither)."""
    folder = tmp_path_factory.mktemp("cli-bundles")
    for backend in (TEST_BACKEND, "direct-zero"):
        run_train(simulated[0], backend, folder / backend, "--epochs", "2")
    return {backend: folder / backend / "model.ptycho" for backend in (TEST_BACKEND, "direct-zero")}


def test_infer_then_starts_the_iterative_backend_from_the_first_result(
    simulated: tuple[Path, Path], bundles: dict, tmp_path: Path
) -> None:
    out = tmp_path / "hybrid"
    result = run_infer(bundles[TEST_BACKEND], simulated[1], out, "--then", "object-echo")
    assert "with numpy-gain, then object-echo from that object" in result.stdout
    with np.load(out / "initial" / "reconstruction.npz", allow_pickle=False) as first:
        assert str(first["backend"]) == TEST_BACKEND
        initial, weight = first["object"], first["weight"]
    with np.load(out / "reconstruction.npz", allow_pickle=False) as final:
        assert str(final["backend"]) == "object-echo"
        image = final["object"]
    # object-echo hands back the object it was given (its own start is the zero object)
    covered = weight > 1 - 1e-6
    assert covered.sum() > 1000 and np.all(np.abs(initial[covered]) > 0.1)
    np.testing.assert_allclose(image[covered], initial[covered], rtol=1e-5)
    assert (out / "amplitude.png").is_file() and (out / "phase.png").is_file()


def test_infer_refines_on_the_data_then_reconstructs(
    simulated: tuple[Path, Path], bundles: dict, tmp_path: Path
) -> None:
    from ptycho_core.workflows import load_inference_bundle

    out = tmp_path / "refined"
    options = ("--refine-epochs", "3", "--nphotons", "1e6", "--then", "object-echo")
    result = run_infer(bundles[TEST_BACKEND], simulated[1], out, *options)
    lines = [line for line in result.stdout.splitlines() if line.startswith("refined")]
    assert len(lines) == 1 and "for 3 epochs (final loss " in lines[0], result.stdout
    refined, config = load_inference_bundle(out / "model-refined.ptycho")
    original, _ = load_inference_bundle(bundles[TEST_BACKEND])
    assert len(refined.history["loss"]) == 3 and config.n_groups is None
    assert config.nphotons == 1e6 and config.validation_split == 0.0
    assert complex(refined.network) != complex(original.network)
    assert (out / "initial" / "reconstruction.npz").is_file()
    with np.load(out / "reconstruction.npz", allow_pickle=False) as final:
        assert str(final["backend"]) == "object-echo"


def test_infer_refuses_what_a_backend_cannot_do_in_one_line(
    simulated: tuple[Path, Path], bundles: dict, tmp_path: Path
) -> None:
    test = simulated[1]
    zero, gain = bundles["direct-zero"], bundles[TEST_BACKEND]
    out = tmp_path / "refused"

    def refused(bundle: Path, *options: str) -> subprocess.CompletedProcess[str]:
        return run_infer(bundle, test, out, *options, check=False)

    assert_one_line_error(
        refused(zero, "--refine-epochs", "2"),
        "backend direct-zero cannot refine a trained model (it has no train_from)",
    )
    assert_one_line_error(
        refused(gain, "--then", TEST_BACKEND),
        "backend numpy-gain cannot start from an initial object",
    )
    # checked before the refinement runs: nothing is written
    assert_one_line_error(
        refused(gain, "--refine-epochs", "2", "--then", "direct-zero"),
        "backend direct-zero cannot start from an initial object",
    )
    assert not out.exists()
    # a backend without iterations refuses --iterations rather than ignoring it
    assert_one_line_error(
        refused(gain, "--iterations", "5"), "InferenceConfig.iterations", "numpy-gain"
    )
    assert_one_line_error(refused(gain, "--nphotons", "1e6"), "--refine-epochs")


# ----------------------------------------------------------------------- backend options


@given(
    value=st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
def test_an_option_value_that_is_a_json_scalar_is_read_as_json(value: object) -> None:
    assert option_value(json.dumps(value)) == value
    assert type(option_value(json.dumps(value))) is type(value)


@given(text=st.text(max_size=20))
def test_any_other_option_value_is_the_raw_string(text: str) -> None:
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    scalar = isinstance(parsed, bool | int | str) or (
        isinstance(parsed, float) and math.isfinite(parsed)
    )
    assert option_value(text) == (parsed if scalar else text)
    for raw in ("null", "[1, 2]", '{"a": 1}', "NaN", "-Infinity", "1e999", "lsqml", "1,2"):
        assert option_value(raw) == raw


@given(
    items=st.lists(
        st.tuples(st.text(max_size=6), st.text(max_size=6)).map(lambda p: f"{p[0]}={p[1]}")
        | st.text(max_size=8),
        max_size=5,
    )
)
def test_option_items_parse_or_are_a_config_error(items: list[str]) -> None:
    names = [item.partition("=")[0] for item in items]
    well_formed = all("=" in item and item.partition("=")[0] for item in items)
    try:
        options = parse_options(items)
    except ConfigError as error:
        assert str(error).startswith("--option: expected ")
        assert not well_formed or len(set(names)) < len(names)
        return
    assert well_formed and len(set(names)) == len(names)
    assert options == {
        n: option_value(item.partition("=")[2]) for n, item in zip(names, items, strict=True)
    }


def test_option_items_without_a_name_or_given_twice_are_refused() -> None:
    assert parse_options(None) == {} and parse_options(["a==b"]) == {"a": "=b"}
    with pytest.raises(ConfigError, match=r"--option: expected NAME=VALUE, found 'probe_modes'"):
        parse_options(["probe_modes"])
    with pytest.raises(ConfigError, match=r"expected NAME=VALUE, found '=2'"):
        parse_options(["=2"])
    with pytest.raises(ConfigError, match=r"expected each NAME once, found 'a' twice"):
        parse_options(["a=1", "a=1"])


def test_train_options_merge_over_the_config_file_and_reach_the_backend(
    simulated: tuple[Path, Path], tmp_path: Path
) -> None:
    from ptycho_core.workflows import load_inference_bundle

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"backend_options": {"newton_fraction": 0.9}}))
    losses = {}
    for name, options in {
        "file": ("--config", str(config)),
        "flag": ("--config", str(config), "--option", "newton_fraction=1"),
        "default": (),
    }.items():
        out = tmp_path / name
        run_train(simulated[0], TEST_BACKEND, out, "--epochs", "1", "--seed", "3", *options)
        model, _ = load_inference_bundle(out / "model.ptycho")
        losses[name] = model.history["loss"][0]
        expected = {"file": {"newton_fraction": 0.9}, "flag": {"newton_fraction": 1}}
        assert dict(model.config.backend_options) == expected.get(name, {})
    # the backend honours the option: a whole Newton step lands on the optimum at once
    assert losses["flag"] < losses["file"] < losses["default"]


def test_infer_options_go_to_the_backend_that_reconstructs(
    simulated: tuple[Path, Path], bundles: dict, tmp_path: Path
) -> None:
    test, gain = simulated[1], bundles[TEST_BACKEND]
    out = tmp_path / "gained"
    run_infer(gain, test, out, "--then", "object-echo", "--option", "echo_gain=2")
    with (
        np.load(out / "initial" / "reconstruction.npz", allow_pickle=False) as first,
        np.load(out / "reconstruction.npz", allow_pickle=False) as final,
    ):
        covered = first["weight"] > 1 - 1e-6
        np.testing.assert_allclose(final["object"][covered], 2 * first["object"][covered], 1e-5)
    # without --then the bundle's backend reconstructs, and numpy-gain has no such option,
    # refused before anything (a refinement included) runs
    refused = tmp_path / "refused"
    for extra in ((), ("--refine-epochs", "2")):
        result = run_infer(gain, test, refused, "--option", "echo_gain=2", *extra, check=False)
        assert_one_line_error(
            result,
            "InferenceConfig.backend_options",
            "numpy-gain backend accepts no backend options",
            "'echo_gain'",
        )
        assert not refused.exists()
    # an option of the first backend is not passed on to the --then one
    result = run_infer(
        gain, test, refused, "--then", "object-echo", "--option", "newton_fraction=1", check=False
    )
    assert_one_line_error(result, "object-echo backend has no option 'newton_fraction'")


def test_demo_options_go_to_its_training(tmp_path: Path) -> None:
    from ptycho_core.workflows import load_inference_bundle

    demo = ("--quiet", "demo", "--backend", TEST_BACKEND, "--epochs", "1", "--n-groups", "16")
    refused = run(
        *demo, "--output-dir", str(tmp_path / "no"), "--option", "echo_gain=2", check=False
    )
    assert_one_line_error(refused, "numpy-gain backend has no option 'echo_gain'")
    assert not (tmp_path / "no").exists()  # refused before anything was simulated
    out = tmp_path / "demo"
    run(*demo, "--output-dir", str(out), "--option", "newton_fraction=1")
    model, _ = load_inference_bundle(out / "model.ptycho")
    assert dict(model.config.backend_options) == {"newton_fraction": 1}


def test_infer_reads_upstreams_layout_with_layout_upstream(
    simulated: tuple[Path, Path], bundles: dict, tmp_path: Path
) -> None:
    """Upstream's file of the same scan (amplitudes in (N, N, n) ``diff3d``, the positions
    its network uses in ``xcoords_start``) reconstructs as ours does."""
    with np.load(simulated[1], allow_pickle=False) as ours:
        data = {
            key: ours[key]
            for key in ("diffraction", "xcoords", "ycoords", "probeGuess", "objectGuess")
        }
    upstream = tmp_path / "upstream.npz"
    np.savez(
        upstream,
        diff3d=np.transpose(data["diffraction"], (1, 2, 0)),
        xcoords=data["xcoords"] + 3.0,  # upstream groups by these but places by the start ones
        ycoords=data["ycoords"] - 2.0,
        xcoords_start=data["xcoords"],
        ycoords_start=data["ycoords"],
        probeGuess=data["probeGuess"].astype(np.complex128),
        objectGuess=data["objectGuess"],
    )
    run_infer(bundles[TEST_BACKEND], simulated[1], tmp_path / "ours")
    run_infer(bundles[TEST_BACKEND], upstream, tmp_path / "theirs", "--layout", "upstream")
    with (
        np.load(tmp_path / "ours" / "reconstruction.npz") as ours,
        np.load(tmp_path / "theirs" / "reconstruction.npz") as theirs,
    ):
        np.testing.assert_allclose(theirs["object"], ours["object"], rtol=1e-6, atol=1e-7)

"""Every class of user error ends the CLI with status 2 and exactly one line on stderr.

The files are broken in the ways a damaged disk, a wrong tool or an attacker breaks
them; ``--traceback`` still shows the stack for a bug report.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

from ptycho_core.bundle import MANIFEST_NAME, write_bundle
from ptycho_core.config import TrainingConfig
from ptycho_core.data import PtychoData, save_npz
from ptycho_core.protocol import TrainedModel
from ptycho_core.results import save_reconstruction
from ptycho_core.stitching import stitch_patches

pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")
N = 64


def ptycho(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env)


def dataset(**changes: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "diffraction": rng.random((8, N, N), dtype=np.float32),
        "xcoords": np.linspace(40.0, 60.0, 8),
        "ycoords": np.linspace(40.0, 60.0, 8),
        "probeGuess": np.ones((N, N), np.complex64),
    }
    return {**arrays, **changes}


def rezip(raw: bytes, member: str, body: bytes) -> bytes:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(raw)) as source,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as sink,
    ):
        for info in source.infolist():
            sink.writestr(info, body if info.filename == member else source.read(info))
    return out.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("broken")
    made: dict[str, Path] = {}

    def put(name: str, raw: bytes) -> None:
        made[name] = folder / name
        made[name].write_bytes(raw)

    valid = folder / "valid.npz"
    save_npz(PtychoData(**_as_data(dataset())), valid)
    made["valid"] = valid
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **dataset())
    compressed = bytearray(buffer.getvalue())
    middle = len(compressed) // 3
    compressed[middle : middle + 16] = bytes(16)  # inside the deflated diffraction stream
    put("corrupt-deflate.npz", bytes(compressed))
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lying, {"descr": "<f4", "fortran_order": False, "shape": (10**12, N, N)}
    )
    put("petabyte.npz", rezip(valid.read_bytes(), "diffraction.npy", lying.getvalue()))
    far = io.BytesIO()
    np.savez(far, **dataset(xcoords=np.array([40.0] * 7 + [1e300])))
    put("far-coordinates.npz", far.getvalue())
    wide = io.BytesIO()
    spread = np.array([40.0] * 7 + [4e5])
    np.savez(wide, **dataset(xcoords=spread, ycoords=spread))
    put("wide-scan.npz", wide.getvalue())

    reconstruction = folder / "reconstruction.npz"
    stitched = stitch_patches(np.ones((2, N, N)), np.array([40.0, 44]), np.array([40.0, 41]))
    save_reconstruction(stitched, reconstruction, backend="numpy-gain")
    raw = reconstruction.read_bytes()
    put("truncated-reconstruction.npz", raw[: len(raw) // 2])
    put("empty-reconstruction.npz", b"")

    bundle = folder / "model.ptycho"
    model = TrainedModel(
        backend="direct-zero",
        config=TrainingConfig(backend="direct-zero"),
        probe=np.ones((N, N), np.complex64),
        intensity_scale=1.0,
        network=None,
    )
    write_bundle(bundle, model, lambda folder: None, framework={})
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read(MANIFEST_NAME))
    deep = json.dumps(manifest)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    put("nested.ptycho", rezip(bundle.read_bytes(), MANIFEST_NAME, deep.encode()))
    manifest["config"]["model"] = [64]
    put(
        "list-model.ptycho",
        rezip(bundle.read_bytes(), MANIFEST_NAME, json.dumps(manifest).encode()),
    )

    put("config-model-number.json", json.dumps({"model": 5}).encode())
    put("config-nested.json", ("[" * 100_000).encode())
    put("config-binary.json", bytes(range(256)))
    put("a-file", b"not a folder")
    return made


def _as_data(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "diffraction": arrays["diffraction"],
        "xcoords": arrays["xcoords"],
        "ycoords": arrays["ycoords"],
        "probe": arrays["probeGuess"],
    }


CASES = {
    "corrupt deflate stream": ("train", "{corrupt-deflate.npz}", "--output-dir", "{out}"),
    "declared petabyte array": ("train", "{petabyte.npz}", "--output-dir", "{out}"),
    "coordinates of 1e300": ("train", "{far-coordinates.npz}", "--output-dir", "{out}"),
    "scan spanning 4e5 pixels": ("train", "{wide-scan.npz}", "--output-dir", "{out}"),
    "truncated reconstruction": ("evaluate", "{truncated-reconstruction.npz}", "{valid}"),
    "empty reconstruction": ("evaluate", "{empty-reconstruction.npz}", "{valid}"),
    "deeply nested manifest": ("infer", "{nested.ptycho}", "{valid}", "--output-dir", "{out}"),
    "non-object config.model in a bundle": (
        "infer",
        "{list-model.ptycho}",
        "{valid}",
        "--output-dir",
        "{out}",
    ),
    "non-object config.model in --config": (
        "train",
        "{valid}",
        "--config",
        "{config-model-number.json}",
        "--output-dir",
        "{out}",
    ),
    "deeply nested --config": (
        "train",
        "{valid}",
        "--config",
        "{config-nested.json}",
        "--output-dir",
        "{out}",
    ),
    "binary --config": (
        "train",
        "{valid}",
        "--config",
        "{config-binary.json}",
        "--output-dir",
        "{out}",
    ),
    "output folder is a file": ("train", "{valid}", "--output-dir", "{a-file}"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_user_error_is_one_line_and_exit_2(
    case: str, files: dict[str, Path], tmp_path: Path
) -> None:
    names = {**{name: str(path) for name, path in files.items()}, "out": str(tmp_path / "out")}
    args = [re.sub(r"\{([^}]+)\}", lambda m: names[m.group(1)], arg) for arg in CASES[case]]
    args[1:1] = ["--backend", "numpy-gain"] if args[0] == "train" else []
    result = ptycho(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (case, result.stderr[-2000:])
    named = [arg for arg in args if arg in names.values() and not arg.endswith("out")]
    assert any(path in lines[0] for path in named), (case, lines[0])
    assert not (tmp_path / "out").exists()


OPTION_CASES = {
    "training option of a backend that declares none": (
        ("--backend", "object-echo", "--option", "foo=1"),
        ("TrainingConfig.backend_options", "object-echo backend", "'foo'"),
    ),
    "option numpy-gain does not declare": (
        ("--backend", "numpy-gain", "--option", "probe_modes=2"),
        ("numpy-gain backend has no option 'probe_modes'", "'newton_fraction'"),
    ),
    "option value the backend refuses": (
        ("--backend", "numpy-gain", "--option", "newton_fraction=2"),
        ("['newton_fraction']", "expects a finite number in (0.0, 1.0]", "found 2"),
    ),
    "option value of no permitted type": (
        ("--backend", "numpy-gain", "--option", f"newton_fraction={'x' * 1025}"),
        ("TrainingConfig.backend_options['newton_fraction']", "at most 1024 characters"),
    ),
    "option name that is no option name": (
        ("--backend", "numpy-gain", "--option", "Newton=1"),
        ("TrainingConfig.backend_options", "found 'Newton'"),
    ),
    "option without '='": (
        ("--backend", "numpy-gain", "--option", "newton_fraction"),
        ("--option: expected NAME=VALUE, found 'newton_fraction'",),
    ),
    "option given twice": (
        ("--backend", "numpy-gain", "--option", "a=1", "--option", "a=2"),
        ("--option: expected each NAME once, found 'a' twice",),
    ),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
def test_a_refused_backend_option_is_one_line_naming_it(
    case: str, files: dict[str, Path], tmp_path: Path
) -> None:
    flags, fragments = OPTION_CASES[case]
    out = tmp_path / "out"
    result = ptycho("train", str(files["valid"]), "--output-dir", str(out), *flags)
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_an_invalid_limit_in_the_environment_is_one_line(files: dict[str, Path]) -> None:
    result = ptycho(
        "train",
        str(files["valid"]),
        "--backend",
        "numpy-gain",
        "--output-dir",
        str(files["valid"].parent / "never"),
        env={"PTYCHO_MAX_ARRAY_BYTES": "lots"},
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "PTYCHO_MAX_ARRAY_BYTES" in result.stderr


def test_traceback_flag_shows_the_stack(files: dict[str, Path]) -> None:
    result = ptycho("--traceback", "evaluate", str(files["empty-reconstruction.npz"]), "x.npz")
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "DataContractError" in result.stderr


def test_a_bug_inside_a_backend_keeps_its_traceback(files: dict[str, Path], tmp_path: Path) -> None:
    """A plain ValueError from a backend is not the user's mistake: exit 1, full stack."""
    trained = run_cli(
        "-q",
        "train",
        str(files["valid"]),
        "--backend",
        "buggy-infer",
        "--output-dir",
        str(tmp_path / "model"),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--n-groups",
        "8",
    )
    assert trained.returncode == 0, trained.stderr
    bundle = str(tmp_path / "model" / "model.ptycho")
    result = run_cli(
        "-q", "infer", bundle, str(files["valid"]), "--output-dir", str(tmp_path / "r")
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr
    assert "ValueError: buggy-infer: an internal inconsistency" in result.stderr
    assert not (tmp_path / "r").exists()

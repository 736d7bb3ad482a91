"""Commands SIGKILLed at random moments leave a complete old or new set, and the next
run cleans up after them.

Each command runs as a real process (the ``ptycho`` console script, or a python child
for a bare save) into a folder that already holds a complete old set, and is SIGKILLed
after a seeded random delay: from its start, spread over its measured duration, or from
the moment it starts writing its outputs, spread over its measured output phase (the
few milliseconds a train spends writing are otherwise almost never hit). After each
kill the visible files must be a complete old set or a complete new one; then the
command runs again to completion and must leave the complete new set and nothing else,
in the output folder and in the temporary folder (each run gets a private TMPDIR, so its
children's "system temporary folder" holds nothing of any other test or run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import PTYCHO, quick_train_args

from ptycho_core.outputs import STAGING_PREFIX
from ptycho_core.workflows import load_bundle

TEST_BACKEND = "numpy-gain"
KILLS = 8
TIMEOUT_S = 120
STAGING_GLOB = f"{STAGING_PREFIX}*"
pytestmark = pytest.mark.usefixtures("ptycho_test_distributions")


# ----------------------------------------------------------------------------- helpers


def child_env(tmpdir: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmpdir)}


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def complete(process: subprocess.Popen[str]) -> None:
    out, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, (process.args, out, err)


def run_complete(command: list[str], env: dict[str, str]) -> float:
    """Run ``command`` to completion; return its wall time."""
    started = time.monotonic()
    complete(start(command, env))
    return time.monotonic() - started


def measure(command: list[str], env: dict[str, str], out: Path) -> tuple[float, float]:
    """Run ``command`` (writing into ``out``) to completion; return its wall time and the
    length of its output phase (first to last output file written, from their mtimes)."""
    started = time.time()
    duration = run_complete(command, env)
    mtimes = [(out / name).stat().st_mtime for name in os.listdir(out)]
    assert started - 1 <= min(mtimes) <= max(mtimes) <= started + duration + 1
    return duration, max(mtimes) - min(mtimes)


def output_phase_started(folder: Path) -> bool:
    """True once an output is being written in ``folder``: a staging folder holds
    something besides its lock (the one ``prepare_output_dir`` makes and removes at once
    never does), or a hidden temporary file is there."""
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(STAGING_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    if set(os.listdir(entry.path)) - {".lock"}:
                        return True
            elif entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                return True
    return False


def kill_plan(duration: float, output_phase: float, seed: int) -> list[tuple[str, float]]:
    """KILLS (clock, delay) pairs. Half are timed from the start, spread over the
    measured ``duration``: one very early, one near the end, two anywhere. Half are timed
    from the moment the outputs start being written, spread over that phase (from a few
    milliseconds for train to a second for infer) and half as long again, so kills land
    in the writes and around the commit even when a loaded machine shifts the timings."""
    rng = random.Random(seed)
    plan = [("start", rng.uniform(0.0, 0.03) * duration), ("start", 0.97 * duration)]
    plan += [("start", rng.uniform(0.03, 0.97) * duration) for _ in range(2)]
    window = 1.5 * output_phase + 0.005
    plan += [("outputs", rng.uniform(0.0, window)) for _ in range(KILLS - len(plan))]
    return plan


def run_killed(command: list[str], env: dict[str, str], when: tuple[str, float], out: Path) -> bool:
    """Start ``command`` writing into ``out`` and SIGKILL it ``when`` = (clock, delay)
    says; True when the kill landed before the command ended by itself (which must then
    have succeeded)."""
    clock, delay = when
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    if clock == "outputs":
        while process.poll() is None and not output_phase_started(out):
            time.sleep(0.0005)
    if process.poll() is None:
        time.sleep(delay)
    process.send_signal(signal.SIGKILL)  # a no-op once it has been reaped
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode in (0, -signal.SIGKILL), (command, process.returncode, err)
    return process.returncode == -signal.SIGKILL


def decided_view(folder: Path) -> dict[str, Path]:
    """Visible name → file, as a reader sees them once a decided commit is finished.

    Visible files are the non-hidden ones. A writer killed in the middle of its renames
    (a window of microseconds) leaves a staging folder with a ``.commit`` list: the set
    is decided and the files still staged are part of it (the next writer moves them).
    """
    view = {name: folder / name for name in os.listdir(folder) if not name.startswith(".")}
    for staging in folder.glob(STAGING_GLOB):
        if (staging / ".commit").is_file():
            for name in json.loads((staging / ".commit").read_text()):
                if (staging / name).is_file():
                    view[name] = staging / name
    return view


def decided_commits(folder: Path) -> int:
    return sum((staging / ".commit").is_file() for staging in folder.glob(STAGING_GLOB))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_no_leftovers(folder: Path, names: set[str], tmpdir: Path) -> None:
    """``folder`` holds exactly ``names`` (no staging folder, temporary, lock...), and the
    children's temporary folder holds no bundle folder and no half-made temporary."""
    assert set(os.listdir(folder)) == names
    left = [n for n in os.listdir(tmpdir) if n.startswith(("ptycho-bundle-", ".ptycho-new-"))]
    assert left == []


def kill_and_recover(
    tmp_path: Path,
    old_set: Path,
    command: Callable[[Path], list[str]],
    classify: Callable[[dict[str, Path]], str],
    plan: list[tuple[str, float]],
) -> list[tuple[str, bool, str, int, int]]:
    """For each kill of ``plan``: copy ``old_set`` into a fresh folder, kill the command
    writing there, classify what is left ('old' or 'new'), rerun it to completion and
    check the complete new set and nothing else. Returns, for each kill, (clock, killed,
    classification, hidden entries left, decided commits).

    Each run has its own folder and TMPDIR, so the rerun after one kill goes on while
    the next run is killed (the wall time of the test is about halved).
    """
    names = set(os.listdir(old_set))
    outcomes = []
    rerun: tuple[subprocess.Popen[str], Path, Path] | None = None

    def check_rerun(process: subprocess.Popen[str], out: Path, tmpdir: Path) -> None:
        complete(process)
        assert_no_leftovers(out, names, tmpdir)
        assert classify({name: out / name for name in names}) == "new"

    try:
        for i, when in enumerate(plan):
            out, tmpdir = tmp_path / f"run{i}", tmp_path / f"tmp{i}"
            shutil.copytree(old_set, out)
            tmpdir.mkdir()
            env = child_env(tmpdir)
            killed = run_killed(command(out), env, when, out)
            debris = sorted(name for name in os.listdir(out) if name.startswith("."))
            pending = decided_commits(out)
            view = decided_view(out)
            assert set(view) == names, (when, sorted(os.listdir(out)))
            kind = classify(view)
            if pending:  # a decided set can only be the new one
                assert kind == "new", when
            if not killed:
                assert kind == "new" and debris == [], (when, debris)
            outcomes.append((when[0], killed, kind, len(debris), pending))

            if rerun is not None:
                check_rerun(*rerun)
            rerun = (start(command(out), env), out, tmpdir)
        if rerun is not None:
            check_rerun(*rerun)
        print("kills (clock, killed, set, hidden entries, decided commits):", outcomes)
    finally:  # a failed check leaves no child behind
        if rerun is not None and rerun[0].poll() is None:
            rerun[0].kill()
            rerun[0].communicate(timeout=TIMEOUT_S)
    return outcomes


def check_coverage(outcomes: list[tuple[str, bool, str, int, int]]) -> None:
    """The kills did hit the run: early ones left the old set, and at least one timed
    from the output phase killed the command while it was writing or committing."""
    assert any(
        killed and kind == "old" for clock, killed, kind, _, _ in outcomes if clock == "start"
    )
    assert any(
        killed and (hidden or kind == "new")
        for clock, killed, kind, hidden, _ in outcomes
        if clock == "outputs"
    ), outcomes


# ----------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Trained:
    test_data: Path
    old: Path
    new: Path
    command: Callable[[Path], list[str]]
    """The train command of the new set, into a given folder."""
    duration: float
    """Wall time of a complete run of ``command``."""
    output_phase: float
    """How long that run took from its first output file written to its last."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Data and two complete train sets: 'old' (2 epochs) and 'new' (3 epochs, timed)."""
    from ptycho_core.data import save_npz
    from ptycho_core.simulate import default_dataset

    root = tmp_path_factory.mktemp("kill")
    (root / "tmp").mkdir()
    env = child_env(root / "tmp")
    train_data, test_data = root / "train.npz", root / "test.npz"
    save_npz(default_dataset("train", n_positions=64), train_data)
    save_npz(default_dataset("test", n_positions=32), test_data)

    def command(out: Path, epochs: int) -> list[str]:
        return [PTYCHO, *quick_train_args(train_data, out, epochs=epochs)]

    run_complete(command(root / "old", 2), env)
    duration, output_phase = measure(command(root / "new", 3), env, root / "new")
    return Trained(
        test_data,
        root / "old",
        root / "new",
        lambda out: command(out, 3),
        duration,
        output_phase,
    )


# ----------------------------------------------------------------------------- train


def test_killed_train_leaves_a_complete_set(tmp_path: Path, trained: Trained) -> None:
    old, new = trained.old, trained.new
    old_hashes = {name: sha256(old / name) for name in os.listdir(old)}
    new_history = (new / "history.json").read_bytes()
    new_network = load_bundle(new / "model.ptycho").network
    assert sorted(old_hashes) == ["history.json", "model.ptycho"]

    def classify(view: dict[str, Path]) -> str:
        history = json.loads(view["history.json"].read_text())
        model = load_bundle(view["model.ptycho"])
        # The pairing: the model's own history is the history.json beside it.
        assert {key: list(values) for key, values in model.history.items()} == history
        if {name: sha256(path) for name, path in view.items()} == old_hashes:
            return "old"
        assert view["history.json"].read_bytes() == new_history
        np.testing.assert_array_equal(model.network, new_network)
        return "new"

    plan = kill_plan(trained.duration, trained.output_phase, seed=20240601)
    check_coverage(kill_and_recover(tmp_path, old, trained.command, classify, plan))


# ----------------------------------------------------------------------------- infer


def test_killed_infer_leaves_a_complete_set(tmp_path: Path, trained: Trained) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = child_env(tmpdir)
    test_data = str(trained.test_data)

    def command(bundle: Path) -> Callable[[Path], list[str]]:
        return lambda out: [PTYCHO, "-q", "infer", str(bundle), test_data, "--output-dir", str(out)]

    new_command = command(trained.new / "model.ptycho")
    old_set, new_set = tmp_path / "ref-old", tmp_path / "ref-new"
    run_complete(command(trained.old / "model.ptycho")(old_set), env)
    duration, output_phase = measure(new_command(new_set), env, new_set)
    names = ["amplitude.png", "phase.png", "reconstruction.npz"]
    assert sorted(os.listdir(old_set)) == sorted(os.listdir(new_set)) == names
    references = {
        kind: {name: sha256(folder / name) for name in names}
        for kind, folder in (("old", old_set), ("new", new_set))
    }
    assert references["old"]["reconstruction.npz"] != references["new"]["reconstruction.npz"]

    def classify(view: dict[str, Path]) -> str:
        hashes = {name: sha256(path) for name, path in view.items()}
        for kind, reference in references.items():
            if hashes == reference:
                return kind
        raise AssertionError(f"neither the old nor the new set: {hashes} vs {references}")

    plan = kill_plan(duration, output_phase, seed=20240602)
    check_coverage(kill_and_recover(tmp_path, old_set, new_command, classify, plan))


# ----------------------------------------------------------------------------- bare save

# Writes bundle number FIRST completely and reports it, waits for a line on stdin, then
# writes FIRST+1, FIRST+2, ... onto the same path, reporting each once it is written.
SAVE_LOOP = """
import sys
import numpy as np
from ptycho_core.bundle import write_bundle
from ptycho_core.config import TrainingConfig
from ptycho_core.protocol import TrainedModel

path, first = sys.argv[1], int(sys.argv[2])
config = TrainingConfig(backend="numpy-gain")
blob = np.random.default_rng(0).bytes(3 * 2**20)  # incompressible: every write takes a while
print("ready", flush=True)
for seq in range(first, first + 1000):
    model = TrainedModel(
        backend="numpy-gain",
        config=config,
        probe=np.ones((config.model.N, config.model.N), np.complex64),
        intensity_scale=1.0,
        network=np.complex128(seq),
        history={"loss": [float(seq)]},
        extra={"seq": seq},
    )

    def payload(folder, seq=seq):
        np.savez(folder / "weights.npz", c=np.complex128(seq))
        (folder / "blob.bin").write_bytes(seq.to_bytes(8, "little") + blob)

    write_bundle(path, model, payload, framework={"numpy": np.__version__})
    print(seq, flush=True)
    if seq == first:
        sys.stdin.readline()
"""


class SaveLoop:
    """A child saving bundles onto one path; its first save is a complete run."""

    def __init__(self, path: Path, first: int, env: dict[str, str]) -> None:
        self.first = first
        self.process = subprocess.Popen(
            [sys.executable, "-c", SAVE_LOOP, str(path), str(first)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().strip()
        started = time.monotonic()
        written = self.process.stdout.readline().strip()
        self.first_write_s = time.monotonic() - started
        if (ready, written) != ("ready", str(first)):
            self.process.kill()
            _, err = self.process.communicate(timeout=TIMEOUT_S)
            raise AssertionError(f"the save loop failed: {ready!r} {written!r} {err}")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> list[int]:
        """SIGKILL the loop; the numbers it reported written after the first."""
        self.process.send_signal(signal.SIGKILL)
        out, err = self.process.communicate(timeout=TIMEOUT_S)
        assert self.process.returncode == -signal.SIGKILL, (self.process.returncode, err)
        return [int(line) for line in out.split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=TIMEOUT_S)


def saved_seq(path: Path) -> int:
    """The number of the complete bundle at ``path`` (every checksum verified on load)."""
    model = load_bundle(path)
    seq = model.extra["seq"]
    assert model.network == seq and model.history == {"loss": [float(seq)]}
    return int(seq)


def test_killed_save_leaves_an_old_or_new_bundle(tmp_path: Path) -> None:
    tmpdir, folder = tmp_path / "tmp", tmp_path / "out"
    tmpdir.mkdir()
    folder.mkdir()
    env = child_env(tmpdir)
    path = folder / "model.ptycho"
    rng = random.Random(20240603)
    mid_write = 0
    per_write = None
    for k in range(KILLS + 1):
        loop = SaveLoop(path, 1000 * k, env)
        try:
            # Its first save ran to completion, after the previous loop was killed: the
            # bundle is that one and nothing else is left, here or in the temporary folder.
            assert saved_seq(path) == loop.first
            assert_no_leftovers(folder, {"model.ptycho"}, tmpdir)
            if k == KILLS:
                break
            per_write = per_write or loop.first_write_s
            loop.go()
            time.sleep(rng.uniform(0.0, 3.0) * per_write)
            written = loop.kill()
        finally:
            loop.stop()
        # The file is the last bundle reported written, or the next one when the kill
        # fell between its rename and its report; never a partial bundle.
        last = written[-1] if written else loop.first
        seq = saved_seq(path)
        assert seq in (last, last + 1), (seq, written, loop.first)
        mid_write += any(name.endswith(".tmp") for name in os.listdir(folder))
    print(f"{mid_write} of {KILLS} kills left a half-written bundle temporary")
    assert mid_write > 0  # some kills did land while a bundle was being written

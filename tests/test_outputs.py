"""Output sets and atomic files (ptycho_core/outputs.py, ptycho_core/_atomic.py), on real files.

Killed writers are real processes: a child runs the library and SIGKILLs itself at a
chosen point, so the on-disk state is exactly what a killed run leaves (lock files whose
flock died with the process included). Live writers are children blocked on stdin while
they hold their locks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, quick_train_args, run_cli

from ptycho_core._atomic import atomic_path
from ptycho_core.errors import PtychoError
from ptycho_core.outputs import STAGING_PREFIX, OutputError, output_set, prepare_output_dir

TEST_BACKEND = "numpy-gain"
CHILD_TIMEOUT_S = 60


# ----------------------------------------------------------------------------- helpers


def write_set(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def contents(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones included): relative name → text."""
    found = {}
    for item in sorted(folder.rglob("*")):
        if item.is_dir() and not item.is_symlink():
            continue
        found[item.relative_to(folder).as_posix()] = item.read_text()
    return found


def staging_folders(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{STAGING_PREFIX}*"))


def run_python(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )


def run_killed(script: str, *args: str) -> None:
    """Run ``script`` in a child that must end by SIGKILLing itself."""
    result = run_python(script, *args)
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr)


class BlockedChild:
    """A child that prints one line once it holds its locks, then waits for a line on stdin."""

    def __init__(self, script: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.line = self.read()
        if not self.line:
            self.process.kill()
            _, err = self.process.communicate(timeout=CHILD_TIMEOUT_S)
            raise AssertionError(f"the child wrote nothing before blocking: {err}")

    def read(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def release(self) -> None:
        """Let the child finish its block; it must exit cleanly."""
        _, err = self.process.communicate("go\n", timeout=CHILD_TIMEOUT_S)
        assert self.process.returncode == 0, err

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=CHILD_TIMEOUT_S)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ptycho_core.data import save_npz
    from ptycho_core.simulate import default_dataset

    path = tmp_path_factory.mktemp("outputs-data") / "train.npz"
    save_npz(default_dataset("train", n_positions=64), path)
    return path


# ----------------------------------------------------------------------------- output_set


def test_a_set_commits_all_its_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a", "b.txt": "old b", "keep.txt": "not ours"})
    with output_set(out) as stage:
        assert stage.parent == out and stage.name.startswith(STAGING_PREFIX)
        (stage / "a.txt").write_text("new a")
        (stage / "b.txt").write_text("new b")
        (stage / "initial").mkdir()
        (stage / "initial" / "c.txt").write_text("new c")
        assert contents(out)["a.txt"] == "old a"  # nothing visible before the commit
    assert contents(out) == {
        "a.txt": "new a",
        "b.txt": "new b",
        "initial/c.txt": "new c",
        "keep.txt": "not ours",
    }


def test_a_set_creates_its_missing_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    assert prepare_output_dir(out) == out
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with output_set(out) as stage:
        (stage / "a.txt").write_text("a")
    assert contents(out) == {"a.txt": "a"}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_an_exception_in_the_block_keeps_the_old_set(
    tmp_path: Path, error: type[BaseException]
) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a", "b.txt": "old b"})
    with pytest.raises(error), output_set(out) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "c.txt").write_text("new c")
        raise error("boom")
    assert contents(out) == {"a.txt": "old a", "b.txt": "old b"}


def test_a_failed_run_removes_the_folders_it_created(tmp_path: Path) -> None:
    out = tmp_path / "out" / "nested"
    with pytest.raises(RuntimeError), output_set(out) as stage:
        assert out.is_dir()
        (stage / "a.txt").write_text("new a")
        raise RuntimeError("boom")
    assert not out.exists()
    assert os.listdir(tmp_path) == []


def test_a_name_taken_by_a_folder_refuses_the_whole_set(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a", "b.txt/inner": "a folder"})
    with pytest.raises(OutputError, match="is a folder"), output_set(out) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "b.txt").write_text("new b")
    assert contents(out) == {"a.txt": "old a", "b.txt/inner": "a folder"}


def test_outputs_are_never_written_through_a_linked_folder(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    write_set(out, {"a.txt": "old a"})
    outside.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match="link"), output_set(out) as stage:
        (stage / "a.txt").write_text("new a")
        (stage / "sub").mkdir()
        (stage / "sub" / "x.txt").write_text("escaped")
    assert os.listdir(outside) == []
    assert (out / "a.txt").read_text() == "old a"
    assert staging_folders(out) == []


def test_a_link_at_an_output_name_is_replaced_not_followed(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    out.mkdir()
    outside.write_text("precious")
    (out / "a.txt").symlink_to(outside)
    with output_set(out) as stage:
        (stage / "a.txt").write_text("new a")
    assert not (out / "a.txt").is_symlink()
    assert (out / "a.txt").read_text() == "new a"
    assert outside.read_text() == "precious"


@pytest.mark.usefixtures("ptycho_test_distributions")
def test_train_replaces_linked_outputs_instead_of_writing_through_them(
    tmp_path: Path, train_data: Path
) -> None:
    from ptycho_core.workflows import load_bundle

    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "history.json").write_text("precious history")
    (outside / "model.ptycho").write_bytes(b"precious model")
    (out / "history.json").symlink_to(outside / "history.json")
    (out / "model.ptycho").symlink_to(outside / "model.ptycho")

    result = run_cli(*quick_train_args(train_data, out))
    assert result.returncode == 0, result.stderr

    assert (outside / "history.json").read_text() == "precious history"
    assert (outside / "model.ptycho").read_bytes() == b"precious model"
    assert sorted(os.listdir(outside)) == ["history.json", "model.ptycho"]
    assert sorted(os.listdir(out)) == ["history.json", "model.ptycho"]
    for name in ("history.json", "model.ptycho"):
        assert not (out / name).is_symlink() and (out / name).is_file()
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2
    assert {k: list(v) for k, v in load_bundle(out / "model.ptycho").history.items()} == history


# ----------------------------------------------------------------------------- killed writers

KILLED_IN_BLOCK = """
import os, signal, sys
from ptycho_core.outputs import output_set
with output_set(sys.argv[1]) as stage:
    (stage / "a.txt").write_text("new a")
    (stage / "b.txt").write_text("new b")
    os.kill(os.getpid(), signal.SIGKILL)
"""

# Dies during the commit, right after the first staged file was renamed into the folder
# (the renames are os.replace calls; the one of .commit.tmp stays inside the staging folder).
KILLED_IN_COMMIT = """
import os, signal, sys
from pathlib import Path
from ptycho_core.outputs import output_set
folder = Path(sys.argv[1]).resolve()
rename = os.replace
def replace_then_die(source, destination):
    rename(source, destination)
    if Path(destination).resolve().parent == folder:
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
with output_set(folder) as stage:
    (stage / "a.txt").write_text("new a")
    (stage / "b.txt").write_text("new b")
"""


def test_a_killed_writer_without_commit_is_discarded(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a", "b.txt": "old b"})
    run_killed(KILLED_IN_BLOCK, str(out))
    (staging,) = staging_folders(out)
    assert sorted(os.listdir(staging)) == [".lock", "a.txt", "b.txt"]
    assert not (staging / ".commit").exists()

    prepare_output_dir(out)
    assert contents(out) == {"a.txt": "old a", "b.txt": "old b"}


@pytest.mark.parametrize("recovery", ["prepare_output_dir", "next output_set"])
def test_a_writer_killed_during_its_commit_is_rolled_forward(tmp_path: Path, recovery: str) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a", "b.txt": "old b", "c.txt": "old c"})
    run_killed(KILLED_IN_COMMIT, str(out))
    # The state a kill during the renames leaves: the set is decided, half of it moved.
    (staging,) = staging_folders(out)
    assert json.loads((staging / ".commit").read_text()) == ["a.txt", "b.txt"]
    assert sorted(os.listdir(staging)) == [".commit", ".lock", "b.txt"]
    assert (out / "a.txt").read_text() == "new a"
    assert (out / "b.txt").read_text() == "old b"

    if recovery == "prepare_output_dir":
        prepare_output_dir(out)
        expected = {"a.txt": "new a", "b.txt": "new b", "c.txt": "old c"}
    else:
        with output_set(out) as stage:
            (stage / "c.txt").write_text("new c")
        expected = {"a.txt": "new a", "b.txt": "new b", "c.txt": "new c"}
    assert contents(out) == expected


LIVE_WRITER = """
import sys
from ptycho_core.outputs import output_set
with output_set(sys.argv[1]) as stage:
    (stage / "a.txt").write_text("live a")
    print(stage, flush=True)
    sys.stdin.readline()
"""


def test_a_live_writers_staging_folder_survives_other_writers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_set(out, {"a.txt": "old a"})
    child = BlockedChild(LIVE_WRITER, str(out))
    try:
        staging = Path(child.line)
        assert staging_folders(out) == [staging]

        prepare_output_dir(out)  # sweeps killed writers' folders only
        assert staging.is_dir() and (staging / "a.txt").read_text() == "live a"

        with output_set(out) as stage:  # another writer commits meanwhile
            (stage / "a.txt").write_text("other a")
        assert contents(out)["a.txt"] == "other a"
        assert staging_folders(out) == [staging]
        assert (staging / "a.txt").read_text() == "live a"

        child.release()  # the last to commit wins
    finally:
        child.stop()
    assert contents(out) == {"a.txt": "live a"}


# ----------------------------------------------------------------------------- atomic_path

KILLED_ATOMIC_WRITER = """
import os, signal, sys
from ptycho_core._atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    os.kill(os.getpid(), signal.SIGKILL)
"""

LIVE_ATOMIC_WRITER = """
import sys
from ptycho_core._atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("live")
    print(tmp, flush=True)
    sys.stdin.readline()
"""


def temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


def test_atomic_path_sweeps_a_killed_writers_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("old")
    run_killed(KILLED_ATOMIC_WRITER, str(target))
    (leftover,) = temporaries(tmp_path, "x")
    assert leftover.read_text() == "half"
    assert target.read_text() == "old"

    with atomic_path(target) as tmp:
        assert not leftover.exists()  # swept before the new temporary is made
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["x"]


def test_atomic_path_keeps_a_live_writers_temporary(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("old")
    child = BlockedChild(LIVE_ATOMIC_WRITER, str(target))
    try:
        theirs = Path(child.line)
        assert temporaries(tmp_path, "x") == [theirs]
        with atomic_path(target) as tmp:
            tmp.write_text("mine")
        assert target.read_text() == "mine"
        assert theirs.read_text() == "live"
        child.release()
    finally:
        child.stop()
    assert target.read_text() == "live"
    assert sorted(os.listdir(tmp_path)) == ["x"]


def test_atomic_path_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["x"]
    assert target.read_text() == "old"


def test_atomic_path_replaces_a_link_instead_of_following_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    target = tmp_path / "x"
    target.symlink_to(outside)
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert not target.is_symlink() and target.read_text() == "new"
    assert outside.read_text() == "precious"


# ----------------------------------------------------------------------------- refusals


def unusable_output(tmp_path: Path, case: str) -> Path:
    """An output folder no run can write: a file, or a folder whose parent cannot take it."""
    if case == "folder is a file":
        (tmp_path / "taken").write_text("a file")
        return tmp_path / "taken"
    if os.geteuid() == 0:  # root writes anywhere: a parent that is a file fails for everyone
        (tmp_path / "parent").write_text("a file")
    else:
        (tmp_path / "parent").mkdir()
        (tmp_path / "parent").chmod(0o555)
    return tmp_path / "parent" / "out"


@pytest.fixture
def restore_permissions(tmp_path: Path) -> Iterator[None]:
    yield
    for item in tmp_path.rglob("*"):
        if item.is_dir() and not item.is_symlink():
            item.chmod(0o755)


UNUSABLE = ["folder is a file", "parent not writable"]


@pytest.mark.usefixtures("restore_permissions")
@pytest.mark.parametrize("case", UNUSABLE)
def test_an_unusable_output_folder_is_refused_before_the_block(tmp_path: Path, case: str) -> None:
    out = unusable_output(tmp_path, case)
    before = contents(tmp_path)
    with pytest.raises(OutputError) as caught:
        prepare_output_dir(out)
    assert isinstance(caught.value, PtychoError) and isinstance(caught.value, OSError)
    assert str(out) in str(caught.value)

    entered = False
    with pytest.raises(OutputError), output_set(out):
        entered = True
    assert not entered
    assert contents(tmp_path) == before


@pytest.mark.usefixtures("ptycho_test_distributions", "restore_permissions")
@pytest.mark.parametrize("case", UNUSABLE)
def test_train_refuses_an_unusable_output_folder_before_training(
    tmp_path: Path, train_data: Path, case: str
) -> None:
    out = unusable_output(tmp_path, case)
    before = contents(tmp_path)
    args = [a for a in quick_train_args(train_data, out) if a != "-q"]  # progress would show
    result = run_cli(*args)
    assert_one_line_error(result, "ptycho train: error: output folder", str(out))
    assert result.stdout == ""
    assert contents(tmp_path) == before


@pytest.mark.usefixtures("restore_permissions")
@pytest.mark.parametrize("case", UNUSABLE)
def test_infer_refuses_an_unusable_output_folder_first(
    tmp_path: Path, train_data: Path, case: str
) -> None:
    out = unusable_output(tmp_path, case)
    before = contents(tmp_path)
    missing_bundle = tmp_path / "missing.ptycho"  # checked only after the output folder
    result = run_cli("infer", str(missing_bundle), str(train_data), "--output-dir", str(out))
    assert_one_line_error(result, "ptycho infer: error: output folder", str(out))
    assert contents(tmp_path) == before


# ----------------------------------------------------------------------------- concurrency

# Commits COUNT sets {a.txt, b.txt} tagged WHO-i; each commit waits for a line on stdin
# once its files are staged, so the test can start the two writers' commits together.
CONCURRENT_WRITER = """
import sys
from ptycho_core.outputs import output_set
folder, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(count):
    tag = f"{who}-{i}"
    with output_set(folder) as stage:
        for name in ("a.txt", "b.txt"):
            (stage / name).write_text(f"{tag}|{who * 100_000}|{tag}")
        print("staged", flush=True)
        sys.stdin.readline()
    print("committed", flush=True)
"""
COMMITS = 20


def parse_output(text: str) -> str:
    """The writer tag of one complete file; fails on a partial or foreign file."""
    head, body, tail = text.split("|")
    who = head.split("-")[0]
    assert head == tail and who in ("p", "q") and body == who * 100_000, text[:80]
    return head


def test_concurrent_writers_commit_whole_sets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_set(out) as stage:
        for name in ("a.txt", "b.txt"):
            (stage / name).write_text(f"p-init|{'p' * 100_000}|p-init")

    seen: set[str] = set()
    problems: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:  # a third party reading the outputs all along
        while not stop.is_set():
            try:
                for name in ("a.txt", "b.txt"):  # never missing, never partial
                    seen.add(parse_output((out / name).read_text()))
            except BaseException as error:  # reported by the test below
                problems.append(error)
                return

    writers = [BlockedChild(CONCURRENT_WRITER, str(out), who, str(COMMITS)) for who in "pq"]
    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        for i in range(COMMITS):
            for writer in writers:
                assert (writer.line if i == 0 else writer.read()) == "staged"
            for writer in writers:  # both commits start at the same moment
                writer.send("go")
            for writer in writers:
                assert writer.read() == "committed"
            # Both commits are done: the folder holds one writer's round-i set, whole
            # (the writers' next staging folders may already be there too).
            tag_a = parse_output((out / "a.txt").read_text())
            assert tag_a == parse_output((out / "b.txt").read_text()), i
            assert tag_a in (f"p-{i}", f"q-{i}")
        for writer in writers:
            _, err = writer.process.communicate(timeout=CHILD_TIMEOUT_S)
            assert writer.process.returncode == 0, err
    finally:
        stop.set()
        watcher.join()
        for writer in writers:
            writer.stop()
    assert problems == []
    assert len(seen) > 2  # the reader did watch the writers
    assert sorted(os.listdir(out)) == ["a.txt", "b.txt"]

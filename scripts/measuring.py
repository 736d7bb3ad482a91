"""What scripts/quality.py and scripts/compare.py share: running the ``ptycho`` command line
as a user would and timing it, scoring a reconstruction with ``ptycho evaluate --json``,
sizing a refinement to a time budget, and rewriting generated blocks between markers.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("amplitude_ssim", "amplitude_psnr", "phase_ssim", "phase_psnr", "frc_half_bit")
"""The ``ptycho evaluate --json`` keys every table reports."""
REFINE_BUDGET_S = 60.0
"""Wall time given to ``ptycho infer --refine-epochs K`` beyond the single pass."""


class CommandFailed(RuntimeError):
    """A ``ptycho`` command exited with a nonzero status or ran past its time limit."""

    def __init__(self, command: str, returncode: int | None, stderr: str) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"failed ({status}): {command}\n{stderr}")

    @property
    def error_line(self) -> str:
        """The last nonempty line of stderr (the CLI's one-line error), or the status."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if lines:
            return lines[-1]
        return "timed out" if self.returncode is None else f"exit status {self.returncode}"


def command_line(args: Sequence[str]) -> str:
    """``args`` as the user types them."""
    return "ptycho " + " ".join(args)


def ptycho(*args: str, timeout: float | None = None) -> tuple[float, str]:
    """Run ``ptycho ARGS`` (quiet); return (wall seconds, stdout).

    Raises :class:`CommandFailed` on a nonzero exit status or after ``timeout`` seconds.
    """
    command = [sys.executable, "-m", "ptycho_core.cli", "-q", *args]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else ""
        raise CommandFailed(
            command_line(args), None, f"{stderr}\ntimed out after {timeout:.0f} s"
        ) from None
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise CommandFailed(command_line(args), done.returncode, done.stderr)
    return elapsed, done.stdout


def evaluate(reconstruction: Path, data: Path, timeout: float | None = None) -> dict[str, float]:
    """``ptycho evaluate --json``: the :data:`METRICS` of a reconstruction."""
    _, out = ptycho("evaluate", str(reconstruction), str(data), "--json", timeout=timeout)
    metrics = json.loads(out)
    return {key: float(metrics[key]) for key in METRICS}


def infer(
    bundle: Path | str, data: Path, out: Path, *extra: str, timeout: float | None = None
) -> dict[str, Any]:
    """``ptycho infer`` + ``ptycho evaluate``: metrics, wall time (of infer) and the command."""
    args = ("infer", str(bundle), str(data), "--output-dir", str(out), *extra)
    seconds, _ = ptycho(*args, timeout=timeout)
    return {
        "metrics": evaluate(out / "reconstruction.npz", data, timeout=timeout),
        "seconds": round(seconds, 1),
        "command": command_line(args),
    }


def refine_epochs_for_budget(
    one_epoch_s: float, three_epochs_s: float, single_s: float, budget_s: float = REFINE_BUDGET_S
) -> int:
    """Epochs of ``--refine-epochs`` that fit into ``budget_s`` beyond the single pass.

    Timed from runs with one and three epochs: their difference leaves out start-up and
    graph compilation, the rest of the one-epoch run beyond the single pass is overhead.
    """
    per_epoch = max((three_epochs_s - one_epoch_s) / 2, 0.1)
    overhead = max(one_epoch_s - per_epoch - single_s, 0.0)
    return max(1, int((budget_s - overhead) // per_epoch))


def machine() -> str:
    """The machine in one line: architecture, cores, Python."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}"


def replace_blocks(text: str, prefix: str, blocks: Mapping[str, str]) -> str:
    """Put each block between ``<!-- PREFIX:NAME -->`` and ``<!-- /PREFIX:NAME -->``.

    Markers absent from ``text`` are left absent; what stood between them is replaced.
    """
    for name, body in blocks.items():
        tag = re.escape(f"{prefix}:{name}")
        pattern = re.compile(rf"(<!-- {tag} -->\n)(?:.*?\n)?(<!-- /{tag} -->)", re.S)
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def write_blocks(doc: Path, prefix: str, blocks: Mapping[str, str]) -> None:
    """:func:`replace_blocks` in the file ``doc``."""
    doc.write_text(replace_blocks(doc.read_text(), prefix, blocks))


def save_json(path: Path, value: Any) -> None:
    """Write ``value`` as sorted, indented JSON (the results files' format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


WORKDIR = "WORKDIR"
"""What the stored results write for the run's work folder (``--workdir``)."""


def portable(value: Any, work: Path) -> Any:
    """``value`` with every path under ``work`` written relative to :data:`WORKDIR`, so the
    stored results (and the commands in the docs) name no folder of the measuring machine."""
    if isinstance(value, dict):
        return {key: portable(item, work) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, work) for item in value]
    if isinstance(value, str):
        for prefix in {str(work.resolve()), str(work)}:
            value = value.replace(prefix + os.sep, WORKDIR + "/")
        return value
    return value

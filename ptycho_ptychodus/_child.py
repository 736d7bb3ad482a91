"""``python -m ptycho_ptychodus._child FD``: the worker process.

Reads one pickled job from stdin, runs it with :func:`~ptycho_ptychodus.worker.child_main`
and writes its events to the pipe ``FD`` as length-prefixed pickles. Only the parent (the
reconstructor, which started this process) writes the job, through a private pipe. A
module of its own, so the job's classes are unpickled from their real module, not from
``__main__``. The parent starts it with ``python -P`` in a private, empty directory and
without its own working directory on ``PYTHONPATH``, so nothing is imported from the
folder Ptychodus was started in.
"""

from __future__ import annotations

import os
import pickle
import sys

from ptycho_ptychodus.worker import FrameWriter, child_main


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print(
            f"usage: python -m {__spec__.name} FD  (started by the Ptychodus adapter)",
            file=sys.stderr,
        )
        return 2
    with os.fdopen(int(argv[1]), "wb") as events:
        job = pickle.load(sys.stdin.buffer)
        child_main(job, FrameWriter(events))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

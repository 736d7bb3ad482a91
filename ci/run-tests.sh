#!/usr/bin/env bash
# The README's test command: needs only python3. Sets up tox in a private virtual
# environment and runs the whole matrix of tox.ini's env_list (lint, core, torch, tf, both,
# onnx, epie, ptychi, ptychodus). Extra arguments go to tox, e.g. `ci/run-tests.sh -e core`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-tox/bin/tox ]; then
    python3 -m venv .venv-tox
    .venv-tox/bin/python -m pip install --quiet --disable-pip-version-check 'tox>=4.22'
fi
exec .venv-tox/bin/tox run "$@"

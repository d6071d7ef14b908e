#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install flwr-privkit with its
# dev extras. torch is pinned to the CPU build these machines carry: an unpinned torch would pull
# a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"

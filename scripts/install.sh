#!/usr/bin/env bash
# Set up bench in ./.venv on this machine: llama-cpp-python built for this CPU, then bench itself.
#   BENCH_EXTRAS   extras to install (default: dev,models; add torch for the torch backend)
#   CMAKE_ARGS     your own llama.cpp build flags (otherwise chosen from this CPU, see llama_cmake_args.py)
#   BENCH_LLAMA_CUDA=1|0   force a CUDA build on or off (default: on when nvcc and an NVIDIA GPU are present)
#   BENCH_BUILD_SERVER=1   also build llama-server (the server backend's embedded server) and llama.cpp's tools
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
EXTRAS=${BENCH_EXTRAS:-dev,models}
LLAMA_CPP_VERSION=0.3.36

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "error: bench needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip)

flags=$(.venv/bin/python scripts/llama_cmake_args.py)
stamp=.venv/llama_cmake_args.txt
installed=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || true)
if [ "$installed" != "$LLAMA_CPP_VERSION" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$flags" ]; then
  echo "building llama-cpp-python $LLAMA_CPP_VERSION with: $flags"
  echo "(about 10 minutes on 2 cores the first time; pip caches the wheel afterwards)"
  cache=()
  # pip's wheel cache ignores CMAKE_ARGS: when the flags changed, build afresh instead of reusing it.
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" != "$flags" ]; then cache=(--no-cache-dir --force-reinstall); fi
  CMAKE_ARGS="$flags" "${PIP[@]}" install "${cache[@]}" "llama-cpp-python==$LLAMA_CPP_VERSION"
  echo "$flags" > "$stamp"
fi
"${PIP[@]}" install -e ".[${EXTRAS}]"
if [ "${BENCH_BUILD_SERVER:-}" = 1 ]; then
  # cmake rebuilds only what changed: once built, this takes seconds
  echo "building llama-server and llama.cpp's tools from the vendored source (10-20 minutes on 2 cores, once)"
  ./scripts/build_llama_tools.sh
fi
echo "bench installed in .venv (extras: $EXTRAS). Try: .venv/bin/bench hw"

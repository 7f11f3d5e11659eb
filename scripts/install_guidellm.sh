#!/usr/bin/env bash
# GuideLLM (PyPI), the independent serving benchmark the server backend's figures are checked against
# (tests/test_server_guidellm.py through scripts/guidellm_reference.py), in its own venv .venv-guidellm:
# its pins (click~=8.4, an unpinned torch, datasets) clash with bench's own. Skips what is already installed.
#   PYTHON   the interpreter to build the venv from (default python3; >= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-guidellm
GUIDELLM_VERSION=0.8.1
# As pyproject's torch extra: pinned to the CPU wheel; an unpinned torch resolves to a multi-GB CUDA build.
TORCH_VERSION=2.13.0
# gguf: transformers reads SmolLM2's tokenizer from its GGUF file (guidellm needs a local tokenizer, no hub).
GGUF_SPEC="gguf>=0.10"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
installed=$("$VENV/bin/python" - <<'EOF' 2>/dev/null || true
import importlib.metadata as m
print(m.version("guidellm"), m.version("torch").split("+")[0], m.version("gguf"))
EOF
)
read -r have_guidellm have_torch _ <<<"${installed:-none none none}"
if [ "$have_guidellm" = "$GUIDELLM_VERSION" ] && [ "$have_torch" = "$TORCH_VERSION" ]; then
  echo "guidellm $GUIDELLM_VERSION already installed in $VENV"
  exit 0
fi
echo "installing guidellm $GUIDELLM_VERSION (torch $TORCH_VERSION, CPU) into $VENV"
"$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" "guidellm==$GUIDELLM_VERSION" "$GGUF_SPEC"
"$VENV/bin/guidellm" --version

"""Which torch quantizations a device can run: a small layer at each, in a subprocess, compared with fp32.

`python -m bench.runners.torch.probe KIND INDEX QUANT...` prints {quant: reason} as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from bench.errors import first_line
from bench.runners.torch.dtypes import INT4_PACKING, WEIGHT_ONLY, compute_dtype_name, device_name, weight_only_config

PROBE_TIMEOUT_S = 300.0

# ------------------------------------------------------------------------ capability check


def _probe_one(quantization: str, device_kind: str, device_index: int) -> str:
    """'' if a small linear layer runs at this quantization on the device and matches fp32, else why not."""
    import torch

    device = device_name(device_kind, device_index)
    dtype_name = compute_dtype_name(quantization, device_kind)
    if dtype_name is None or quantization == "fp32":
        return ""
    if device_kind == "cuda" and dtype_name == "bfloat16" and not torch.cuda.is_bf16_supported():
        gpu = torch.cuda.get_device_name(device_index)
        return f"{quantization} needs bfloat16, which {gpu} does not support"
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256, bias=False)
    inputs = torch.randn(8, 256)
    reference = layer(inputs).detach()
    dtype = getattr(torch, dtype_name)
    layer = layer.to(device=device, dtype=dtype)
    what = f"{quantization} ({dtype_name} matmul)"
    if quantization in WEIGHT_ONLY:
        try:
            from torchao import __version__ as torchao_version
            from torchao.quantization import quantize_
        except ImportError as exc:
            return f"{quantization} weight-only quantization needs torchao ({exc}): pip install -e '.[torch]'"
        config = weight_only_config(quantization, device_kind)
        what = f"{quantization} weight-only (torchao {torchao_version} {type(config).__name__}"
        what += f", {INT4_PACKING[device_kind]} layout)" if quantization == "int4" else ")"
        try:
            quantize_(layer, config)
        except Exception as exc:  # noqa: BLE001 - an unsupported kernel is the answer, not a crash
            hint = (
                "; torchao's int4 kernels are for CUDA GPUs: on CPU use int8, or llama.cpp's Q4 types"
                if quantization == "int4" and device_kind == "cpu"
                else ""
            )
            return f"{what} is not supported on {device}: {type(exc).__name__}: {first_line(exc)}{hint}"
    try:
        with torch.inference_mode():
            output = layer(inputs.to(device=device, dtype=dtype)).float().cpu()
    except Exception as exc:  # noqa: BLE001
        return f"{what} does not run on {device}: {type(exc).__name__}: {first_line(exc)}"
    error = float((output - reference).abs().max() / reference.abs().max())
    if not np.isfinite(error) or error > 0.2:  # int4 is the loosest: ~0.08 relative error on random weights
        return f"{what} on {device} gives wrong results (max relative error {error:.3g} against fp32)"
    return ""


def probe_quantizations(device_kind: str, device_index: int, quantizations: list[str]) -> dict[str, str]:
    """Run inside the probe subprocess: quantization -> '' (supported) or the reason it is not."""
    try:
        import torch
        import transformers  # noqa: F401 - the runner needs it for every quantization
    except ImportError as exc:
        return {
            q: f"the torch backend needs torch and transformers ({exc}): pip install -e '.[torch]'"
            for q in quantizations
        }
    if device_kind == "cuda" and not torch.cuda.is_available():
        return {q: f"torch {torch.__version__} cannot use CUDA here" for q in quantizations}
    return {q: _probe_one(q, device_kind, device_index) for q in quantizations}


def quantization_skip_reasons(device_kind: str, device_index: int, quantizations: list[str]) -> dict[str, str]:
    """Which torch quantizations this device cannot run, and why (empty reason: it can).

    Checked for real (a small layer at each quantization) in a subprocess, so the parent neither pays
    for importing torch nor holds a CUDA context while workers measure memory.
    """
    command = [
        sys.executable,
        "-m",
        "bench.runners.torch.probe",
        "probe",
        device_kind,
        str(device_index),
        *quantizations,
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        reason = f"the torch capability check did not finish in {PROBE_TIMEOUT_S:.0f} s"
        return dict.fromkeys(quantizations, reason)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        return dict.fromkeys(quantizations, f"the torch capability check failed (exit {done.returncode}): {tail}")
    reasons: dict[str, str] = json.loads(lines[-1])
    return reasons


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.runners.torch.probe probe KIND INDEX QUANT...`: print {quant: reason} as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "probe":
        print("usage: python -m bench.runners.torch.probe probe cpu|cuda INDEX QUANTIZATION...", file=sys.stderr)
        return 2
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # libraries that print go to stderr, so stdout holds only the answer
    reasons = probe_quantizations(args[1], int(args[2]), args[3:])
    out.write(json.dumps(reasons) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Can a backend run on a device of this machine, and if not, exactly what is missing.

Backend-specific checks live here until each backend package owns its own availability check.
"""
from __future__ import annotations

from bench.hardware.fingerprint import Fingerprint


def _torch_cuda_reason(fp: Fingerprint, index: int) -> str:
    """Why torch cannot run on cuda:<index>, or "" if it can."""
    if not fp.torch_version:
        return "torch is not installed; pip install -e '.[torch]' (and a CUDA build of torch for GPUs)"
    try:
        import torch  # lazily: importing torch takes seconds
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a reason, not a crash
        return f"torch {fp.torch_version} failed to import: {exc}"
    if not torch.cuda.is_available():
        return (f"torch {fp.torch_version} cannot use CUDA (torch.cuda.is_available() is False); "
                "install a CUDA build of torch")
    if index >= torch.cuda.device_count():
        return f"torch sees only {torch.cuda.device_count()} CUDA device(s); cuda:{index} is not one of them"
    return ""


def device_available(fp: Fingerprint, kind: str, index: int, backend: str) -> tuple[bool, str]:
    """Can `backend` run on device kind:index here? (False, reason) says exactly what is missing."""
    if kind == "cpu":
        return True, ""
    if kind != "cuda":
        return False, f"unknown device kind {kind!r}; expected 'cpu' or 'cuda'"
    if fp.nvml_status != "ok":
        return False, f"device cuda:{index} unavailable: {fp.nvml_status}"
    if not 0 <= index < len(fp.gpus):
        names = ", ".join(g.name for g in fp.gpus)
        return False, (f"device cuda:{index} absent: this machine has {len(fp.gpus)} NVIDIA GPU(s)"
                       + (f" ({names})" if names else ""))
    if backend == "llamacpp":
        if not fp.llama_cpp_python_version:
            return False, "llama-cpp-python is not installed"
        if not fp.llama_cpp_gpu_offload:
            return False, ("llama-cpp-python on this machine was built without GPU offload; "
                           "reinstall with CMAKE_ARGS=-DGGML_CUDA=on")
    if backend == "torch":
        reason = _torch_cuda_reason(fp, index)
        if reason:
            return False, reason
    return True, ""

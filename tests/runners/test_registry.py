"""The backend registry: each backend's spec, and whether it can run on a device of this machine."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from bench.hardware import Fingerprint
from bench.runners.registry import device_reason
from tests.test_hardware import make_fp


def _available(fp: Fingerprint, backend: str, kind: str, index: int) -> tuple[bool, str]:
    reason = device_reason(fp, backend, kind, index)
    return not reason, reason


@pytest.fixture
def real_fp() -> Fingerprint:
    from bench.hardware import detect

    return detect()


# ---------------------------------------------- device_reason: can a backend run on a device here


def test_cpu_is_always_available() -> None:
    for fp in (make_fp(), make_fp(gpus=(), nvml_status="NVML not available: x", llama_cpp_gpu_offload=False)):
        for backend in ("llamacpp", "torch"):
            assert _available(fp, backend, "cpu", 0) == (True, "")


def test_absent_cuda_on_this_machine_has_a_reason(real_fp: Fingerprint) -> None:
    index = len(real_fp.gpus)  # one past the last GPU: cuda:0 on a machine without any
    ok, reason = _available(real_fp, "llamacpp", "cuda", index)
    assert not ok
    assert reason.startswith(f"device cuda:{index} ")
    if real_fp.nvml_status != "ok":
        assert real_fp.nvml_status in reason


def test_cuda_with_one_gpu() -> None:
    fp = make_fp()
    assert _available(fp, "llamacpp", "cuda", 0) == (True, "")
    assert _available(fp, "llamacpp", "cuda", 1) == (
        False,
        "device cuda:1 absent: this machine has 1 NVIDIA GPU(s) (NVIDIA H200)",
    )
    assert _available(make_fp(llama_cpp_gpu_offload=False), "llamacpp", "cuda", 0) == (
        False,
        (
            "llama-cpp-python on this machine was built without GPU offload; "
            "reinstall with scripts/install.sh on a machine with nvcc (or BENCH_LLAMA_CUDA=1)"
        ),
    )


def test_cuda_without_nvml_or_llama_cpp() -> None:
    no_nvml = make_fp(gpus=(), nvml_status="NVML not available: NVML Shared Library Not Found")
    ok, reason = _available(no_nvml, "llamacpp", "cuda", 0)
    assert not ok and "NVML Shared Library Not Found" in reason
    ok, reason = _available(make_fp(llama_cpp_python_version=""), "llamacpp", "cuda", 0)
    assert not ok and "not installed" in reason
    ok, reason = _available(make_fp(), "llamacpp", "rocm", 0)
    assert not ok and "rocm" in reason


def test_cuda_for_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    ok, reason = _available(make_fp(torch_version=""), "torch", "cuda", 0)
    assert not ok and "torch is not installed" in reason

    cuda = SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))  # what `import torch` will find
    ok, reason = _available(make_fp(torch_version="2.13.0"), "torch", "cuda", 0)
    assert not ok and "torch.cuda.is_available() is False" in reason

    cuda.is_available, cuda.device_count = (lambda: True), (lambda: 1)
    assert _available(make_fp(torch_version="2.13.0+cu128"), "torch", "cuda", 0) == (True, "")

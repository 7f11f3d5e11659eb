"""detect(): probe this machine into a Fingerprint.

Works on a laptop without NVIDIA, llama.cpp or torch: pynvml and cpuinfo are imported guarded, llama_cpp
lazily, torch never (only its package metadata is read), and nothing here raises: what cannot be read is
reported empty, with the NVML status saying why.
"""

from __future__ import annotations

import platform
import socket

import psutil

from bench.hardware import cpu, nvml, software
from bench.hardware.fingerprint import Fingerprint
from bench.hardware.probe import attempt, dist_version


def detect() -> Fingerprint:
    """Probe this machine. Never raises: what cannot be read is reported empty, with NVML saying why."""
    brand, flags = attempt(cpu.cpu_brand_and_flags) or ("unknown", ())
    memory = attempt(psutil.virtual_memory)
    gpus, nvml_status = attempt(nvml.probe_gpus) or ((), "NVML not available: probe failed")
    llama_version, llama_build, offload = attempt(software.probe_llama_cpp) or ("", "", False)
    return Fingerprint(
        host=attempt(socket.gethostname) or platform.node(),
        os=platform.platform(),
        cpu_brand=brand,
        cpu_arch=platform.machine(),
        cpu_physical_cores=cpu.physical_cores(),
        cpu_logical_cores=cpu.logical_cores(),
        cpu_flags=flags,
        ram_total_bytes=int(memory.total) if memory else 0,
        ram_available_bytes=int(memory.available) if memory else 0,
        gpus=gpus,
        nvml_status=nvml_status,
        python_version=platform.python_version(),
        bench_version=attempt(software.bench_version) or "",
        llama_cpp_python_version=llama_version,
        llama_cpp_build=llama_build,
        llama_cpp_gpu_offload=offload,
        torch_version=dist_version("torch"),
    )

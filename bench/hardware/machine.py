"""detect(): probe this machine into a Fingerprint.

Works on a laptop without NVIDIA or any backend: pynvml and cpuinfo are imported guarded, each backend's
software is read by the probe its spec gives (bench.runners.registry.detect_machine passes them), and nothing
here raises: what cannot be read is reported empty, with the NVML status saying why.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Callable, Mapping

import psutil

from bench.hardware import cpu, nvml
from bench.hardware.fingerprint import BackendSoftware, Fingerprint
from bench.hardware.probe import attempt


def bench_version() -> str:
    from bench import __version__  # lazily: bench/__init__ may one day import this package

    return __version__


def detect(software_probes: Mapping[str, Callable[[], BackendSoftware]] | None = None) -> Fingerprint:
    """Probe this machine and, per backend name, its software. Never raises: what cannot be read is reported
    empty, with NVML saying why."""
    brand, flags = attempt(cpu.cpu_brand_and_flags) or ("unknown", ())
    memory = attempt(psutil.virtual_memory)
    gpus, nvml_status = attempt(nvml.probe_gpus) or ((), "NVML not available: probe failed")
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
        bench_version=attempt(bench_version) or "",
        backends=tuple(attempt(probe) or BackendSoftware(name) for name, probe in (software_probes or {}).items()),
    )

"""What a result row says about the machine it was measured on, and the stable id that matches machines.

Pure data: bench.hardware.machine.detect() fills these from the live machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# What identifies a machine across driver, kernel and bench updates: hardware only, RAM to the GiB (the
# kernel's MemTotal moves by a few MiB between versions), and the model of the GPU a row's cell ran on (a
# swapped GPU is another machine for its GPU cells; a CPU cell's row names no GPU, and keeps its machine). Every result row carries these columns, so the id
# can be recomputed from a row, also from CSVs written before this rule.
STABLE_HARDWARE_COLUMNS = (
    "host",
    "cpu_brand",
    "cpu_physical_cores",
    "cpu_logical_cores",
    "ram_total_bytes",
    "gpu_count",
    "gpu_name",
)


def stable_fingerprint(fields: Mapping[str, Any]) -> str:
    """The machine id from its stable hardware columns (a result row, or a live Fingerprint's values)."""

    def number(name: str) -> int:
        value = fields.get(name)
        try:
            return int(float(value)) if value not in (None, "") else 0
        except (TypeError, ValueError):
            return 0

    hardware = [
        str(fields.get("host") or ""),
        str(fields.get("cpu_brand") or ""),
        number("cpu_physical_cores"),
        number("cpu_logical_cores"),
        round(number("ram_total_bytes") / 2**30),
        number("gpu_count"),
    ]
    gpu = str(fields.get("gpu_name") or "")
    if gpu:  # only then: a machine without a GPU keeps the id it had before the GPU model was part of it
        hardware.append(gpu)
    return hashlib.sha256(json.dumps(hardware).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it; `index` is the CUDA ordinal (cuda:<index>)."""

    index: int
    name: str
    uuid: str
    vram_total_bytes: int
    vram_free_bytes: int
    driver: str
    cuda_version: str
    power_limit_w: float | None
    memory_bus_width_bits: int | None
    max_memory_clock_mhz: int | None

    def memory_bandwidth_gbs(self) -> float | None:
        """Theoretical peak: bytes per transfer x transfers/s (DDR: 2 per clock). Decode speed is bound by it."""
        if not self.memory_bus_width_bits or not self.max_memory_clock_mhz:
            return None
        return self.memory_bus_width_bits / 8 * self.max_memory_clock_mhz * 2 / 1e3


@dataclass(frozen=True)
class BackendSoftware:
    """One backend's software on this machine, as its spec's probe reads it ('' version: not installed)."""

    name: str
    version: str = ""
    build: str = ""  # what the build was compiled with (e.g. llama.cpp's ggml features)
    gpu_offload: bool = False  # the build can offload to a GPU


@dataclass(frozen=True)
class MachineColumns:
    """The machine and software columns of a result row, in CSV order (bench.results.columns takes its columns
    from these fields). GPU columns describe the GPU the cell ran on; backend columns the cell's backend."""

    host: str = ""
    os: str = ""
    cpu_brand: str = ""
    cpu_arch: str = ""
    cpu_physical_cores: int | None = None
    cpu_logical_cores: int | None = None
    cpu_flags: str = ""
    ram_total_bytes: int | None = None
    ram_available_bytes: int | None = None
    gpu_name: str = ""
    gpu_vram_total_bytes: int | None = None
    gpu_vram_free_bytes: int | None = None
    gpu_driver: str = ""
    cuda_version: str = ""
    gpu_power_limit_w: float | None = None
    gpu_count: int | None = None
    fingerprint: str = ""
    bench_version: str = ""
    python_version: str = ""
    backend_version: str = ""
    backend_build: str = ""


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MachineColumns))


@dataclass(frozen=True)
class Fingerprint:
    """The machine and software a result was measured on; recorded in every result row."""

    host: str
    os: str
    cpu_brand: str
    cpu_arch: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    cpu_flags: tuple[str, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuInfo, ...]
    nvml_status: str
    python_version: str
    bench_version: str
    backends: tuple[BackendSoftware, ...] = ()  # each registered backend's probe (bench.runners.registry)

    def software(self, backend: str) -> BackendSoftware:
        """The backend's software here; an empty version when it was not probed or is not installed."""
        return next((b for b in self.backends if b.name == backend), BackendSoftware(backend))

    def fingerprint_id(self) -> str:
        """Short stable id of the hardware: same machine, same id, whatever is free right now."""
        return stable_fingerprint(
            {
                "host": self.host,
                "cpu_brand": self.cpu_brand,
                "cpu_physical_cores": self.cpu_physical_cores,
                "cpu_logical_cores": self.cpu_logical_cores,
                "ram_total_bytes": self.ram_total_bytes,
                "gpu_count": len(self.gpus),
                "gpu_name": self.gpus[0].name if self.gpus else "",  # as a row of a cell on the first GPU
            }
        )

    def row_fields(self, device_kind: str, device_index: int, backend: str = "") -> dict[str, object]:
        """The machine columns of a result row: the GPU the cell ran on, if any, and the cell's backend."""
        gpu = self._gpu(device_kind, device_index)
        software = self.software(backend)
        columns = MachineColumns(
            host=self.host,
            os=self.os,
            cpu_brand=self.cpu_brand,
            cpu_arch=self.cpu_arch,
            cpu_physical_cores=self.cpu_physical_cores,
            cpu_logical_cores=self.cpu_logical_cores,
            cpu_flags=" ".join(self.cpu_flags),
            ram_total_bytes=self.ram_total_bytes,
            ram_available_bytes=self.ram_available_bytes,
            gpu_name=gpu.name if gpu else "",
            gpu_vram_total_bytes=gpu.vram_total_bytes if gpu else None,
            gpu_vram_free_bytes=gpu.vram_free_bytes if gpu else None,
            gpu_driver=gpu.driver if gpu else "",
            cuda_version=gpu.cuda_version if gpu else "",
            gpu_power_limit_w=gpu.power_limit_w if gpu else None,
            gpu_count=len(self.gpus),
            fingerprint=self.fingerprint_id(),
            bench_version=self.bench_version,
            python_version=self.python_version,
            backend_version=software.version,
            backend_build=software.build,
        )
        return asdict(columns)

    def _gpu(self, device_kind: str, device_index: int) -> GpuInfo | None:
        # An absent device gives blanks, not an error: skipped cells are still written as rows.
        if device_kind != "cuda" or not 0 <= device_index < len(self.gpus):
            return None
        return self.gpus[device_index]

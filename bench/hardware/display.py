"""The `bench hw` table: the fingerprint, one row per GPU, then the system warnings with their fixes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.hardware.fingerprint import BackendSoftware, Fingerprint, GpuInfo
from bench.hardware.noise import SystemWarning, system_warnings
from bench.hardware.state import sensor_inventory

if TYPE_CHECKING:
    from rich.table import Table


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**30:.1f} GiB"


def _gpu_line(gpu: GpuInfo) -> str:
    bandwidth = gpu.memory_bandwidth_gbs()
    parts = [
        gpu.name,
        f"{_gib(gpu.vram_total_bytes)} total, {_gib(gpu.vram_free_bytes)} free",
        f"driver {gpu.driver}, CUDA {gpu.cuda_version}",
        "" if gpu.power_limit_w is None else f"power limit {gpu.power_limit_w:.0f} W",
        "" if bandwidth is None else f"~{bandwidth:.0f} GB/s memory bandwidth",
        gpu.uuid,
    ]
    return " | ".join(p for p in parts if p)


def _software_line(software: BackendSoftware) -> str:
    if not software.version:
        return "(not installed)"
    parts = [software.version, software.build, "GPU offload" if software.gpu_offload else ""]
    return " | ".join(p for p in parts if p)


def format_fingerprint(fp: Fingerprint, warnings: list[SystemWarning] | None = None) -> Table:
    """The `bench hw` table: every field, one row per GPU, then the warnings with their fixes.

    `warnings` defaults to system_warnings(fp) (which takes about LOAD_SAMPLE_S seconds).
    """
    from rich.table import Table
    from rich.text import Text  # Text, not markup: values like flags or process names may contain '['

    if warnings is None:
        warnings = system_warnings(fp)
    table = Table(title=f"hardware fingerprint {fp.fingerprint_id()}", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in (
        ("host", fp.host),
        ("os", fp.os),
        ("cpu_brand", fp.cpu_brand),
        ("cpu_arch", fp.cpu_arch),
        ("cpu_cores", f"{fp.cpu_physical_cores} physical, {fp.cpu_logical_cores} logical"),
        ("cpu_flags", " ".join(fp.cpu_flags) or "(none of interest)"),
        ("ram", f"{_gib(fp.ram_total_bytes)} total, {_gib(fp.ram_available_bytes)} available"),
        ("nvml", fp.nvml_status),
        ("python", fp.python_version),
        ("bench", fp.bench_version),
        *((f"backend {b.name}", _software_line(b)) for b in fp.backends),
    ):
        table.add_row(name, Text(value))
    for gpu in fp.gpus:
        table.add_row(f"gpu cuda:{gpu.index}", Text(_gpu_line(gpu)))
    table.add_section()
    for warning in warnings:
        table.add_row(Text(f"warning: {warning.name}", style="yellow"), Text(f"{warning.message}\nfix: {warning.fix}"))
    if not warnings:
        table.add_row("warnings", Text("none"))
    return table


def format_sensors(inventory: list[tuple[str, str]] | None = None) -> Table:
    """The sensors bench reads for energy and the sustained mode: a reading, or why it is not available."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="sensors (energy, sustained mode)", show_header=False)
    table.add_column("sensor", style="bold", no_wrap=True)
    table.add_column("reading")
    for name, status in sensor_inventory() if inventory is None else inventory:
        table.add_row(name, Text(status, style="yellow" if "not available" in status else ""))
    return table

"""bench.hardware.bandwidth: the CPU probe reads DRAM, not cache (issue 12 item 5), and every figure says what it is."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.hardware import bandwidth, cpu
from bench.hardware.bandwidth import CPU_READ_PROBE, NVML_THEORETICAL_PEAK, MemoryBandwidth
from tests.test_hardware import H200, make_fp

MIB, GIB = 2**20, 2**30


def fake_llc(monkeypatch: pytest.MonkeyPatch, root: Path, instances: int, size_kib: int) -> int:
    """A sysfs tree with `instances` L3 caches of `size_kib` each (two CPUs per instance); returns the total."""
    monkeypatch.setattr(cpu, "CPU_SYSFS", root)
    for number in range(2 * instances):
        for index, (level, kind, size) in enumerate(
            [(1, "Data", "48K"), (2, "Unified", "1024K"), (3, "Unified", f"{size_kib}K")]
        ):
            directory = root / f"cpu{number}" / "cache" / f"index{index}"
            directory.mkdir(parents=True)
            shared = str(number) if level < 3 else f"{number // 2 * 2}-{number // 2 * 2 + 1}"
            for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
                (directory / name).write_text(f"{value}\n")
    return instances * size_kib * 2**10


def plenty_of_ram(monkeypatch: pytest.MonkeyPatch, available: int = 64 * GIB) -> None:
    monkeypatch.setattr(bandwidth.psutil, "virtual_memory", lambda: SimpleNamespace(available=available))


def test_buffer_exceeds_four_times_a_large_llc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    llc = fake_llc(monkeypatch, tmp_path, instances=8, size_kib=96 * 1024)  # 8 x 96 MiB (Genoa-X-like)
    plenty_of_ram(monkeypatch)
    assert llc == 768 * MIB
    assert bandwidth.default_probe_buffer_bytes() >= 4 * llc


def test_probe_uses_the_llc_sized_buffer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    llc = fake_llc(monkeypatch, tmp_path, instances=2, size_kib=40 * 1024)  # 4 x 80 MiB is above the floor
    plenty_of_ram(monkeypatch)
    result = bandwidth.measure_cpu_bandwidth(passes=1)
    assert result.buffer_bytes is not None and result.buffer_bytes >= 4 * llc > bandwidth.FLOOR_BYTES


def test_buffer_floor_and_ram_ceiling() -> None:
    assert bandwidth.probe_buffer_bytes(None, 64 * GIB) == bandwidth.FLOOR_BYTES  # LLC unknown
    assert bandwidth.probe_buffer_bytes(1 * MIB, 64 * GIB) == bandwidth.FLOOR_BYTES  # a tiny LLC
    assert bandwidth.probe_buffer_bytes(1 * GIB, 64 * GIB) == 4 * GIB
    assert bandwidth.probe_buffer_bytes(1 * GIB, 2 * GIB) == 512 * MIB  # never more than a quarter of free RAM


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_kernel_reads_every_element_once(parts: int) -> None:
    count = 1_000_003  # not a multiple of any part count: uneven chunks
    buffer = np.arange(count, dtype=np.uint64)
    chunks = bandwidth.split(buffer, parts)
    assert sum(len(c) for c in chunks) == count and len(chunks) == parts
    with ThreadPoolExecutor(max_workers=parts) as pool:
        assert bandwidth.read_checksum(chunks, pool) == count * (count - 1) // 2
        buffer[count // 2] += np.uint64(1)  # one element changed in the middle: the checksum sees it
        assert bandwidth.read_checksum(chunks, pool) == count * (count - 1) // 2 + 1


def test_measurement_on_this_machine() -> None:
    result = bandwidth.measure_cpu_bandwidth()
    llc = cpu.last_level_cache_bytes()
    print(
        f"\nCPU read bandwidth here: {result.gbs:.1f} GB/s ({result.source}, buffer "
        f"{result.buffer_bytes / MIB:.0f} MiB, {result.threads} threads, LLC "
        f"{None if llc is None else llc / MIB} MiB)"
    )
    assert result.source == CPU_READ_PROBE and result.gbs > 0 and result.threads == cpu.usable_cores()
    assert result.buffer_bytes is not None and result.buffer_bytes >= bandwidth.FLOOR_BYTES
    assert bandwidth.measure_bandwidth_gbs(buffer_bytes=16 * MIB, passes=1) > 0  # the float run.py records


def test_each_figure_is_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    peak = bandwidth.gpu_peak_bandwidth(H200)
    assert peak == MemoryBandwidth(H200.memory_bandwidth_gbs() or 0, NVML_THEORETICAL_PEAK)
    assert set(bandwidth.SOURCE_DESCRIPTIONS) == {CPU_READ_PROBE, NVML_THEORETICAL_PEAK}
    probe = MemoryBandwidth(20.0, CPU_READ_PROBE, buffer_bytes=256 * MIB, threads=2)
    monkeypatch.setattr(bandwidth, "measure_cpu_bandwidth", lambda: probe)
    fp = make_fp()
    assert bandwidth.device_bandwidth(fp, "cpu", 0) is probe
    assert bandwidth.device_bandwidth(fp, "cuda", 0) == peak
    assert bandwidth.device_bandwidth(fp, "cuda", 1) is None  # absent GPU
    unknown_bus = make_fp(gpus=(dataclasses.replace(H200, memory_bus_width_bits=None),))
    assert bandwidth.device_bandwidth(unknown_bus, "cuda", 0) is None

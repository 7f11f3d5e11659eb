"""Memory bandwidth for the decode roofline, always labelled with what the figure is.

Decoding one token reads every weight once, so decode tok/s is bounded by read bandwidth / bytes per token.
- CPU ("cpu_read_probe"): a measurement. One thread per usable core (resolve_threads(0)) sums its slice of
  a buffer at least LLC_MULTIPLE x the last-level cache, so the reads come from DRAM and not from cache;
  the figure is bytes READ per second (decode mostly reads), best of a few passes.
- CUDA ("nvml_theoretical_peak"): the GPU's specified peak from NVML (bus width x memory clock), not a
  measurement; a roofline percentage against it is not comparable with one against a CPU probe.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import psutil

from bench.hardware import Fingerprint, GpuInfo, last_level_cache_bytes, resolve_threads

CPU_READ_PROBE = "cpu_read_probe"
NVML_THEORETICAL_PEAK = "nvml_theoretical_peak"
SOURCE_DESCRIPTIONS = {
    CPU_READ_PROBE: "measured: threads summing a buffer at least 4x the last-level cache, bytes read per second",
    NVML_THEORETICAL_PEAK: "the GPU's theoretical peak (memory bus width x clock, NVML), not measured",
}

LLC_MULTIPLE = 4  # a buffer this many times the LLC leaves a negligible share of reads hitting cache
FLOOR_BYTES = 256 * 2**20  # also the size used when the LLC cannot be read
RAM_FRACTION_CEILING = 0.25  # never take more than this share of available RAM
PASSES = 5
_FILL = np.uint64(0x0101010101010101)  # non-zero: pages are really written (zero pages would all share one)


@dataclass(frozen=True)
class MemoryBandwidth:
    """A bandwidth figure and what it is: `source` is CPU_READ_PROBE or NVML_THEORETICAL_PEAK."""

    gbs: float  # 1e9 bytes per second
    source: str
    buffer_bytes: int | None = None  # the probe's buffer; None for a theoretical peak
    threads: int | None = None


def probe_buffer_bytes(llc_bytes: int | None, available_ram_bytes: int) -> int:
    """LLC_MULTIPLE x the LLC, at least FLOOR_BYTES, at most RAM_FRACTION_CEILING of available RAM."""
    wanted = max(LLC_MULTIPLE * (llc_bytes or 0), FLOOR_BYTES)
    return int(min(wanted, RAM_FRACTION_CEILING * available_ram_bytes))


def default_probe_buffer_bytes() -> int:
    return probe_buffer_bytes(last_level_cache_bytes(), int(psutil.virtual_memory().available))


def split(buffer: np.ndarray, parts: int) -> list[np.ndarray]:
    """`parts` contiguous views covering `buffer` exactly once (no gap, no overlap)."""
    bounds = np.linspace(0, len(buffer), parts + 1, dtype=np.int64)
    return [buffer[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def read_checksum(chunks: list[np.ndarray], pool: ThreadPoolExecutor) -> int:
    """Sum of every uint64 element (mod 2**64), each chunk summed in its own thread.

    numpy runs a reduction's inner loop without the GIL when the dtype needs no Python API (numpy's
    reduction.h, `needs_api`), so the threads read in parallel; seen here as overlapping reductions in two
    threads. Each byte is read once, and nothing is written but one integer per chunk.
    """
    return sum(int(total) for total in pool.map(np.add.reduce, chunks)) % 2**64


def measure_cpu_bandwidth(
    buffer_bytes: int | None = None, threads: int | None = None, passes: int = PASSES
) -> MemoryBandwidth:
    """Sustained read bandwidth of RAM in GB/s, best of `passes` over a buffer larger than every cache."""
    threads = resolve_threads(threads or 0)
    size = buffer_bytes or default_probe_buffer_bytes()
    count = max(threads, size // 8)
    buffer = np.empty(count, dtype=np.uint64)
    buffer.fill(_FILL)  # touches every page before timing
    expected = int(_FILL) * count % 2**64
    chunks = split(buffer, threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for attempt in range(passes + 1):  # the first pass warms the threads and the TLB, untimed
            started = time.perf_counter()
            checksum = read_checksum(chunks, pool)
            elapsed = time.perf_counter() - started
            if checksum != expected:
                raise RuntimeError(f"bandwidth probe read {checksum:#x}, expected {expected:#x}")
            if attempt:
                best = min(best, elapsed)
    return MemoryBandwidth(count * 8 / best / 1e9, CPU_READ_PROBE, buffer_bytes=count * 8, threads=threads)


def gpu_peak_bandwidth(gpu: GpuInfo) -> MemoryBandwidth | None:
    gbs = gpu.memory_bandwidth_gbs()
    return None if gbs is None else MemoryBandwidth(gbs, NVML_THEORETICAL_PEAK)


def device_bandwidth(fp: Fingerprint, kind: str, index: int) -> MemoryBandwidth | None:
    """The roofline bandwidth of a device: the CPU probe, or a GPU's NVML peak; None when unknown."""
    if kind == "cpu":
        return measure_cpu_bandwidth()
    gpu = fp.gpus[index] if kind == "cuda" and 0 <= index < len(fp.gpus) else None
    return None if gpu is None else gpu_peak_bandwidth(gpu)


def measure_bandwidth_gbs(buffer_bytes: int | None = None, threads: int | None = None, passes: int = PASSES) -> float:
    """measure_cpu_bandwidth(...).gbs, for callers that record the figure without its source."""
    return measure_cpu_bandwidth(buffer_bytes, threads, passes).gbs

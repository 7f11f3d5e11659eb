"""A short memory-bandwidth probe: how many GB/s this machine's RAM sustains (STREAM-style copy).

Decoding one token reads every weight once, so decode tok/s is bounded by bandwidth / bytes per token.
The report uses this number for the roofline. The probe copies a buffer much larger than any CPU cache,
split across one thread per core (numpy releases the GIL while copying), and keeps the best of a few
passes; it counts bytes read plus bytes written, as STREAM's "copy" does. It takes well under a second.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PROBE_BYTES = (
    64 * 2**20
)  # per buffer: larger than the last-level cache of common CPUs; first touch dominates the time
PASSES = 4


def _copy_chunks(sources: list[np.ndarray], targets: list[np.ndarray], pool: ThreadPoolExecutor) -> float:
    started = time.perf_counter()
    list(pool.map(np.copyto, targets, sources))
    return time.perf_counter() - started


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def measure_bandwidth_gbs(
    buffer_bytes: int = PROBE_BYTES, threads: int | None = None, passes: int = PASSES
) -> float:
    """Sustained copy bandwidth in GB/s (1e9 bytes/s, reads + writes), best of `passes`."""
    threads = max(1, threads or _usable_cpus())
    count = buffer_bytes // 8
    source = np.ones(count, dtype=np.float64)
    target = np.zeros(count, dtype=np.float64)  # zeros() then a first copy: pages are touched before timing
    bounds = np.linspace(0, count, threads + 1, dtype=np.int64)
    sources = [source[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    targets = [target[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        _copy_chunks(sources, targets, pool)
        best = min(_copy_chunks(sources, targets, pool) for _ in range(passes))
    return 2 * count * 8 / best / 1e9

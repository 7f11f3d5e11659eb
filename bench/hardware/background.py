"""How busy the rest of the machine was while a cell was measured: the load a reader needs to judge a figure.

The check before a run (bench.hardware.noise) sees the machine for half a second; a background job that
starts later, or a neighbour on a shared runner, shows only here. Other processes' CPU time is the
machine's busy CPU time (/proc/stat through psutil) minus this process's own (all its threads), over the
same wall-clock window.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class CpuSnapshot:
    wall_s: float  # monotonic clock
    machine_busy_s: float  # every CPU's non-idle time, summed
    own_s: float  # this process's user + system time, all threads


def snapshot() -> CpuSnapshot:
    times = psutil.cpu_times()
    # As psutil's cpu_percent: busy = all - idle - iowait; guest time is already counted in user on Linux.
    busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
    busy -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    own = psutil.Process().cpu_times()
    return CpuSnapshot(time.monotonic(), busy, own.user + own.system)


def background_cpu_pct(before: CpuSnapshot, after: CpuSnapshot, n_cpus: int) -> float | None:
    """Percent of the machine's CPU capacity (n_cpus × the window) that other processes used between two
    snapshots; None when the window is too short to say."""
    wall = after.wall_s - before.wall_s
    if wall <= 0.05 or n_cpus < 1:
        return None
    others = (after.machine_busy_s - before.machine_busy_s) - (after.own_s - before.own_s)
    return round(max(0.0, min(100.0, 100.0 * others / (wall * n_cpus))), 1)


def machine_cpus() -> int:
    """Logical CPUs of the machine: /proc/stat's busy time covers all of them, whatever this process may use."""
    return psutil.cpu_count(logical=True) or 1

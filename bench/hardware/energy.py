"""One energy interface over NVML (a GPU board) and RAPL (a CPU package and its DRAM), and the idle baseline.

An `EnergyCounter` gives cumulative joules and names its `source`:
  nvml_board       the GPU board's energy counter (whole board: GPU, its memory, VRM losses; mJ, ~100 ms updates)
  rapl_package     the CPU package (cores, caches, uncore; µJ counter, ~1 ms updates)
  rapl_dram+package  the package plus its DRAM domain, where the CPU reports one
Both include whatever the device draws at rest; `idle_power_w` measures that draw so rows can give energy net
of idle too. `CounterMeter` is the EnergyMeter measure_cell uses, over any counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol

from bench.hardware import nvml
from bench.hardware.sensors import SYSFS, RaplCounter, rapl_domains

IDLE_SAMPLE_S = 2.0  # how long the device is watched at rest for its idle power
NVML_SOURCE = "nvml_board"
NVML_POWER_SOURCE = "nvml_board_power_samples"  # no energy counter (pre-Volta): power readings integrated


class EnergyCounter(Protocol):
    source: str

    def joules(self) -> float | None:
        """Joules since the counter was made (or any fixed origin); None when a read failed."""


class NvmlCounter:
    """The GPU board's energy counter (NVML must stay initialised while it is used)."""

    source = NVML_SOURCE

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def joules(self) -> float | None:
        mj = nvml.energy_mj(self.handle)
        return None if mj is None else mj / 1000.0


def cpu_counter(root: Path = SYSFS) -> tuple[RaplCounter | None, str]:
    """A RAPL counter over the package and DRAM domains, or None and "not available: <why>"."""
    domains, why = rapl_domains(root)
    return (RaplCounter(domains), "") if domains else (None, why)


def gpu_counter(stack: ExitStack, kind: str, index: int) -> tuple[NvmlCounter | None, str]:
    """The NVML counter of cuda:<index>, NVML held open by `stack`; or None and why not."""
    reason = stack.enter_context(nvml.session())
    if reason:
        return None, reason
    handle = nvml.handle_for(kind, index)
    if handle is None:
        return None, f"not available: NVML has no {kind}:{index}"
    if nvml.energy_mj(handle) is None:
        return None, "not available: this GPU has no NVML energy counter (before Volta)"
    return NvmlCounter(handle), ""


def idle_power_w(
    counter: EnergyCounter,
    seconds: float = IDLE_SAMPLE_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> float | None:
    """Average watts over `seconds` with nothing running on the device (the caller keeps it idle)."""
    start, t0 = counter.joules(), clock()
    sleep(seconds)
    end, t1 = counter.joules(), clock()
    if start is None or end is None or t1 <= t0:
        return None
    return (end - start) / (t1 - t0)


class CounterMeter:
    """An EnergyMeter over any counter: each energy_j_since_mark() closes a window (one repetition's decode);
    avg_power_w is over every window closed."""

    def __init__(self, counter: EnergyCounter, clock: Callable[[], float] = time.perf_counter) -> None:
        self.counter = counter
        self.source = counter.source
        self._clock = clock
        self._mark: tuple[float, float | None] = (clock(), counter.joules())
        self._windows: list[tuple[float, float]] = []

    def mark(self) -> None:
        self._mark = (self._clock(), self.counter.joules())

    def energy_j_since_mark(self) -> float | None:
        now, joules = self._clock(), self.counter.joules()
        then, before = self._mark
        if joules is None or before is None:
            return None
        self._windows.append((joules - before, now - then))
        return joules - before

    @property
    def avg_power_w(self) -> float | None:
        seconds = sum(s for _, s in self._windows)
        return sum(j for j, _ in self._windows) / seconds if seconds > 0 else None


def net_of_idle(gross_j: float | None, seconds: float, idle_w: float | None) -> float | None:
    """Energy above what the device would have drawn at rest over the same seconds."""
    if gross_j is None or idle_w is None:
        return None
    return gross_j - idle_w * seconds

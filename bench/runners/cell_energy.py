"""A cell's energy: which counter measures it (the worker's GPU sampler, else RAPL for a CPU cell), the device's
idle power (taken once per worker, before its group's first cell), and the row's energy fields gross and net
of idle."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.hardware.energy import CounterMeter, EnergyCounter, cpu_counter, gpu_counter, idle_power_w
from bench.hardware.sensors import SYSFS
from bench.results import samples_from_text
from bench.suite import Cell

_IDLE_W: dict[tuple[str, int], float | None] = {}  # (device kind, index) -> watts, once per worker process


class Meter(Protocol):
    def mark(self) -> None: ...
    def energy_j_since_mark(self) -> float | None: ...


@dataclass
class CellEnergy:
    meter: Meter | None  # what measure_cell marks and reads
    source: str  # bench.hardware.energy's source name, or "not available: why"
    idle_w: float | None = None
    own_meter: CounterMeter | None = None  # set when the meter is ours (RAPL), not the worker's GPU sampler


def _idle(
    key: tuple[str, int], counter: EnergyCounter, sleep: Callable[[float], None], clock: Callable[[], float]
) -> float | None:
    if key not in _IDLE_W:
        _IDLE_W[key] = idle_power_w(counter, sleep=sleep, clock=clock)
    return _IDLE_W[key]


def cell_energy(
    cell: Cell,
    given: Any,
    rapl: bool = True,
    root: Path = SYSFS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> CellEnergy:
    """The energy meter of a cell: `given` (the worker's GpuSampler) where it measures, else RAPL for a CPU cell
    (when `rapl`: the work runs in this process)."""
    key = (cell.device_kind, cell.device_index)
    if getattr(given, "source", ""):
        with ExitStack() as stack:
            counter, _ = gpu_counter(stack, cell.device_kind, cell.device_index)
            idle = _idle(key, counter, sleep, clock) if counter is not None else None
        return CellEnergy(given, given.source, idle)
    if cell.device_kind != "cpu":
        return CellEnergy(given, f"not available: no NVML energy reading for {cell.device_kind}:{cell.device_index}")
    if not rapl:
        return CellEnergy(given, "not available: the work runs outside this process (RAPL would measure this one)")
    rapl, why = cpu_counter(root)
    if rapl is None:
        return CellEnergy(None, why)
    idle = _idle(key, rapl, sleep, clock)
    meter = CounterMeter(rapl, clock)
    return CellEnergy(meter, rapl.source, idle, meter)


def net_per_token(energy_per_token: list[float], tok_s: list[float], idle_w: float | None) -> float | None:
    """Mean over repetitions of J per token minus idle watts × seconds per token (1 / tok/s)."""
    if idle_w is None or not energy_per_token or len(energy_per_token) != len(tok_s):
        return None
    return sum(e - idle_w / s for e, s in zip(energy_per_token, tok_s, strict=True)) / len(tok_s)


def energy_fields(energy: CellEnergy, speed: dict[str, Any]) -> dict[str, Any]:
    """The row's energy source, idle power and net energy (and, for a RAPL meter, its average power)."""
    fields: dict[str, Any] = {"energy_source": energy.source, "idle_power_w": energy.idle_w}
    if energy.own_meter is not None:
        fields["avg_power_w"] = energy.own_meter.avg_power_w
    fields["energy_net_j_per_decode_token"] = net_per_token(
        samples_from_text(speed.get("energy_j_per_decode_token_samples")),
        samples_from_text(speed.get("decode_tok_s_samples")),
        energy.idle_w,
    )
    return fields

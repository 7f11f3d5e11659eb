"""The state of the device a cell runs on, read once per sustained-mode window: clocks, temperature, power,
fans and the throttle reasons, in words. A sensor the machine lacks is named in `missing` with its reason."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench.hardware import nvml, sensors
from bench.hardware.energy import EnergyCounter, cpu_counter, gpu_counter
from bench.hardware.sensors import SYSFS, Reading, unavailable

CPU_THROTTLE = "CPU thermal throttle"


@dataclass(frozen=True)
class MachineState:
    clock_mhz: float | None = None  # GPU: SM clock; CPU: mean current frequency
    memory_clock_mhz: float | None = None  # GPU only
    temp_c: float | None = None  # GPU: its die; CPU: the hottest hwmon / thermal-zone sensor
    power_w: float | None = None  # the energy counter's joules over the window ÷ its seconds
    fan_rpm: float | None = None
    reasons: tuple[str, ...] = ()  # throttle reasons active at the read, in words


@dataclass
class StateReader:
    """Reads MachineState for `kind`:`index`; use as a context manager (it holds NVML open for a GPU)."""

    kind: str
    index: int = 0
    root: Path = SYSFS
    clock: Callable[[], float] = time.perf_counter
    missing: dict[str, str] = field(default_factory=dict)  # sensor -> "not available: <why>"
    _stack: ExitStack = field(default_factory=ExitStack)
    _handle: Any = None
    _nvml_reason: str = ""
    _counter: EnergyCounter | None = None
    _last: tuple[float, float | None] = (0.0, None)  # (time, joules) of the previous read
    _throttle_count: float | None = None

    def __enter__(self) -> Self:
        if self.kind == "cuda":
            reason = self._stack.enter_context(nvml.session())
            self._handle = None if reason else nvml.handle_for(self.kind, self.index)
            self._nvml_reason = reason or f"not available: NVML has no cuda:{self.index}"
            self._counter, why = gpu_counter(self._stack, self.kind, self.index)
        else:
            self._counter, why = cpu_counter(self.root)
        if self._counter is None:
            self.missing["power"] = why
        self._last = (self.clock(), self._counter.joules() if self._counter else None)
        self._throttle_count = sensors.cpu_throttle_count(self.root).value
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stack.close()

    def _note(self, name: str, reading: Reading) -> float | None:
        if reading.value is None:
            self.missing.setdefault(name, reading.why)
        return reading.value

    def _power(self) -> float | None:
        now = self.clock()
        joules = self._counter.joules() if self._counter else None
        then, before = self._last
        self._last = (now, joules)
        if joules is None or before is None or now <= then:
            return None
        return (joules - before) / (now - then)

    def _gpu_reading(self, name: str, value: float | None) -> float | None:
        reading = Reading(value) if value is not None else unavailable(f"NVML gave no {name}")
        if self._handle is None:
            reading = Reading(None, self._nvml_reason)
        return self._note(f"GPU {name}", reading)

    def read(self) -> MachineState:
        """The state now; power is averaged since the previous read (or since entering)."""
        power = self._power()
        if self.kind == "cuda":
            h = self._handle
            return MachineState(
                clock_mhz=self._gpu_reading("SM clock", nvml.clock_mhz(h, "sm") if h else None),
                memory_clock_mhz=self._gpu_reading("memory clock", nvml.clock_mhz(h, "mem") if h else None),
                temp_c=self._gpu_reading("temperature", nvml.temperature_c(h) if h else None),
                power_w=power,
                reasons=tuple(nvml.clock_event_names(nvml.clock_event_reasons(h) if h else None)),
            )
        count = self._note("CPU throttle count", sensors.cpu_throttle_count(self.root))
        throttled = count is not None and self._throttle_count is not None and count > self._throttle_count
        self._throttle_count = count
        return MachineState(
            clock_mhz=self._note("CPU frequency", sensors.cpu_frequency_mhz(self.root)),
            temp_c=self._note("CPU temperature", sensors.cpu_temperature(self.root)),
            power_w=power,
            fan_rpm=self._note("fan", sensors.fan_rpm(self.root)),
            reasons=(CPU_THROTTLE,) if throttled else (),
        )

    def missing_text(self) -> str:
        """Every sensor that could not be read, with why: 'CPU temperature: not available: ...; ...'."""
        return "; ".join(f"{name}: {why}" for name, why in self.missing.items())


def sensor_inventory(root: Path = SYSFS) -> list[tuple[str, str]]:
    """Each sensor bench reads, with its reading now or "not available: <why>" (`bench hw` lists them)."""
    domains, why = sensors.rapl_domains(root)
    energy = ", ".join(f"{d.name} ({d.energy_file.parent.name})" for d in domains) or why
    found = [("CPU energy (RAPL)", energy)]
    for name, reading, unit in (
        ("CPU frequency (cpufreq)", sensors.cpu_frequency_mhz(root), "MHz"),
        ("CPU temperature (hwmon, thermal zones)", sensors.cpu_temperature(root), "°C"),
        ("fans (hwmon)", sensors.fan_rpm(root), "RPM"),
        ("CPU thermal throttle count", sensors.cpu_throttle_count(root), "since boot"),
    ):
        found.append((name, reading.why if reading.value is None else f"{reading.value:.0f} {unit}"))
    with nvml.session() as reason:
        handles = [] if reason else nvml.visible_handles()
        if reason:
            found.append(("GPU clocks, temperature, power, energy, throttle reasons (NVML)", reason))
        for index, handle in enumerate(handles):
            values = {
                "SM clock": nvml.clock_mhz(handle, "sm"),
                "memory clock": nvml.clock_mhz(handle, "mem"),
                "temperature": nvml.temperature_c(handle),
                "power": nvml.power_w(handle),
                "energy counter": nvml.energy_mj(handle),
                "clock-event reasons": nvml.clock_event_reasons(handle),
            }
            for name, value in values.items():
                found.append(
                    (f"cuda:{index} {name} (NVML)", "not available: NVML gave none" if value is None else "readable")
                )
    return found

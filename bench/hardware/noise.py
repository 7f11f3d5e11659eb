"""Is this machine fit to benchmark on right now? Like `pyperf system show`: each problem with its fix.

Checks read sysfs, psutil and NVML; a check whose source cannot be read is skipped silently (a missing
sensor is not a problem with the machine).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from bench.hardware import cpu, nvml
from bench.hardware.probe import attempt, read_int

if TYPE_CHECKING:
    from bench.hardware.fingerprint import Fingerprint

CPU_BUSY_PERCENT = 20.0  # system-wide CPU use above this before a run means someone else is working
LOAD_SAMPLE_S = 0.5  # how long system_warnings() watches the CPU
HOT_CELSIUS = 85.0  # used when a sensor reports no (or a nonsensical) "high" threshold
LOW_RAM_FRACTION = 0.10
SWAP_USED_BYTES = 256 * 2**20


@dataclass(frozen=True)
class SystemWarning:
    """Something about the machine that makes results slower or noisier, and how to fix it."""

    name: str
    message: str
    fix: str


def warnings_text(warnings: Iterable[SystemWarning], background_cpu_pct: float | None = None) -> str:
    """The warnings' names for a CSV column, e.g. 'cpu_governor; cpu_load'; "" when there are none.
    background_cpu_pct: other processes' CPU use while the cell ran (bench.hardware.background); above
    CPU_BUSY_PERCENT it is cpu_load too, even when the machine was quiet before the run."""
    names = [w.name for w in warnings]
    if background_cpu_pct is not None and background_cpu_pct > CPU_BUSY_PERCENT:
        names.append("cpu_load")
    return "; ".join(dict.fromkeys(names))


# ------------------------------------------------------------------------------------ CPU


def _governor_warnings() -> list[SystemWarning]:
    governors: dict[str, str] = {}
    for path in sorted(cpu.CPU_SYSFS.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = attempt(path.read_text)
        if value is not None:
            governors[path.parent.parent.name] = value.strip()
    slow = sorted({g for g in governors.values() if g != "performance"})
    if not slow:
        return []
    count = sum(g != "performance" for g in governors.values())
    return [
        SystemWarning(
            "cpu_governor",
            f"CPU frequency governor is {'/'.join(slow)} on {count} of {len(governors)} CPUs, not performance: "
            "clocks ramp up during the run and the first measurements are slow",
            "sudo cpupower frequency-set -g performance",
        )
    ]


def _boost_warnings() -> list[SystemWarning]:
    no_turbo = cpu.CPU_SYSFS / "intel_pstate" / "no_turbo"
    boost = cpu.CPU_SYSFS / "cpufreq" / "boost"
    if read_int(no_turbo) == 0:
        fix = f"for stable numbers: echo 1 | sudo tee {no_turbo}"
    elif read_int(boost) == 1:
        fix = f"for stable numbers: echo 0 | sudo tee {boost}"
    else:
        return []
    return [
        SystemWarning(
            "cpu_boost",
            "CPU turbo/boost is on: clocks depend on temperature and on how many cores are busy, "
            "so results vary from run to run",
            fix,
        )
    ]


def _temperature_warnings() -> list[SystemWarning]:
    read = getattr(psutil, "sensors_temperatures", None)  # Linux/FreeBSD only
    hot = []
    for chip, entries in (read() if read else {}).items():
        for entry in entries:
            # Some sensors report high=0 or a nonsense threshold; fall back to HOT_CELSIUS alone then.
            high = entry.high if entry.high and entry.high > 40 else None
            if entry.current is not None and (entry.current >= HOT_CELSIUS or (high and entry.current >= high)):
                hot.append(f"{chip}/{entry.label or '?'} {entry.current:.0f} C")
    if not hot:
        return []
    return [
        SystemWarning(
            "cpu_thermal",
            f"hot sensors: {', '.join(hot[:5])}: the CPU is probably throttling",
            "let the machine cool down and check fans and airflow before benchmarking",
        )
    ]


def _cpu_load_warnings() -> list[SystemWarning]:
    me = psutil.Process()
    own = {me.pid} | {c.pid for c in attempt(me.children, True) or []}
    procs = []
    for proc in psutil.process_iter(["name"]):
        if proc.pid not in own and attempt(proc.cpu_percent, None) is not None:  # first call starts the clock
            procs.append(proc)
    busy = psutil.cpu_percent(interval=LOAD_SAMPLE_S)
    if busy <= CPU_BUSY_PERCENT:
        return []
    usage = [(attempt(p.cpu_percent, None) or 0.0, p) for p in procs]
    top = sorted(usage, key=lambda u: u[0], reverse=True)[:3]
    names = ", ".join(f"{p.info.get('name') or '?'} (pid {p.pid}, {pct:.0f}%)" for pct, p in top)
    return [
        SystemWarning(
            "cpu_load",
            f"the CPU is {busy:.0f}% busy before the benchmark starts; top: {names}",
            "stop or pause those processes (or use an idle machine): they take cores and memory bandwidth",
        )
    ]


def _ram_warnings() -> list[SystemWarning]:
    memory = psutil.virtual_memory()
    if memory.available >= LOW_RAM_FRACTION * memory.total:
        return []
    return [
        SystemWarning(
            "low_ram",
            f"only {memory.available / 2**30:.1f} GiB of {memory.total / 2**30:.1f} GiB RAM is available: "
            "models may be paged from disk, and then the benchmark measures the disk",
            "close memory-hungry programs before benchmarking",
        )
    ]


def _swap_warnings() -> list[SystemWarning]:
    used = psutil.swap_memory().used
    if used <= SWAP_USED_BYTES:
        return []
    return [
        SystemWarning(
            "swap_in_use",
            f"{used / 2**20:.0f} MiB of swap is in use: pages swapped back in during a run stall it",
            "free some memory, then empty swap: sudo swapoff -a && sudo swapon -a",
        )
    ]


# ------------------------------------------------------------------------------------ GPU


def _gpu_slowdown_warning(handle: Any, label: str) -> SystemWarning | None:
    mask = nvml.clock_event_reasons(handle)
    active = nvml.clock_event_names(mask)
    if not active:
        return None
    return SystemWarning(
        "gpu_throttle",
        f"{label} clocks are held down: {', '.join(active)}",
        "let the GPU cool down and check its cooling and power cables; `nvidia-smi -q -d PERFORMANCE` shows the cause",
    )


def _gpu_process_warning(handle: Any, label: str) -> SystemWarning | None:
    others = [p for p in nvml.compute_processes(handle) or [] if p.pid != os.getpid()]
    if not others:
        return None
    described = []
    for proc in others[:5]:
        name = attempt(lambda pid=proc.pid: psutil.Process(pid).name()) or "?"
        mib = f", {proc.used_bytes / 2**20:.0f} MiB" if proc.used_bytes else ""
        described.append(f"{name} (pid {proc.pid}{mib})")
    return SystemWarning(
        "gpu_busy",
        f"{label} is used by {len(others)} other process(es): {', '.join(described)}",
        "stop them before benchmarking (`nvidia-smi` lists them): they share its compute and VRAM",
    )


def _gpu_persistence_warning(handle: Any, label: str) -> SystemWarning | None:
    if not nvml.persistence_off(handle):
        return None
    return SystemWarning(
        "gpu_persistence",
        f"{label} persistence mode is off: the driver tears the GPU down between programs, "
        "adding start-up latency and a clock ramp to each run",
        "sudo nvidia-smi -pm 1",
    )


def _gpu_warnings(fp: Fingerprint | None) -> list[SystemWarning]:
    if fp is not None and fp.nvml_status != "ok":
        return []
    with nvml.session() as reason:
        if reason:
            return []
        found = []
        for ordinal, handle in enumerate(nvml.visible_handles()):
            label = f"cuda:{ordinal} ({nvml.device_name(handle)})"
            for check in (_gpu_slowdown_warning, _gpu_process_warning, _gpu_persistence_warning):
                found.append(attempt(check, handle, label))
        return [w for w in found if w is not None]


def system_warnings(fp: Fingerprint | None = None) -> list[SystemWarning]:
    """What on this machine will make results slow or noisy (like `pyperf system show`), each with its fix.

    Takes about LOAD_SAMPLE_S seconds (it watches the CPU load). A check whose source cannot be read
    is skipped silently: a missing sensor is not a problem with the machine.
    """
    checks: list[Callable[[], list[SystemWarning]]] = [
        _governor_warnings,
        _boost_warnings,
        _temperature_warnings,
        _cpu_load_warnings,
        _ram_warnings,
        _swap_warnings,
        lambda: _gpu_warnings(fp),
    ]
    found: list[SystemWarning] = []
    for check in checks:
        found.extend(attempt(check) or [])
    return found

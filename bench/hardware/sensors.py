"""The machine's sysfs sensors as data: RAPL energy (powercap), temperatures and fans (hwmon, thermal zones),
CPU frequency (cpufreq) and the kernel's thermal-throttle counts.

Every reader takes the sysfs root (default /sys) so tests can hand it a simulated tree. A sensor that cannot
be read is a `Reading` whose value is None and whose `why` says "not available: <why>" — never an exception.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench.hardware.probe import read_int, read_text

SYSFS = Path("/sys")
POWERCAP = "class/powercap"
HWMON = "class/hwmon"
THERMAL = "class/thermal"
CPUS = "devices/system/cpu"
RAPL_DOMAINS = ("package", "dram")  # core/uncore are inside package; psys is the whole platform


@dataclass(frozen=True)
class Reading:
    """One sensor's value now, or None and the reason it cannot be read."""

    value: float | None
    why: str = ""


def unavailable(why: str) -> Reading:
    return Reading(None, f"not available: {why}")


# ----------------------------------------------------------------------------------------- RAPL


@dataclass(frozen=True)
class RaplDomain:
    name: str  # package-0, dram, ...
    energy_file: Path  # energy_uj: microjoules, wrapping at max_range_uj
    max_range_uj: int


def _unreadable(path: Path) -> bool:
    return path.exists() and not os.access(path, os.R_OK)


def rapl_domains(root: Path = SYSFS) -> tuple[list[RaplDomain], str]:
    """The package and DRAM RAPL domains whose counters this process can read, and "" or why there are none."""
    base = root / POWERCAP
    zones = sorted(base.glob("*-rapl:*")) if base.is_dir() else []
    if not zones:
        return [], f"not available: no RAPL domains under {base} (no powercap driver: a VM, or not Intel/AMD)"
    found, locked = [], []
    for zone in zones:
        name = read_text(zone / "name") or zone.name
        if not name.startswith(RAPL_DOMAINS):
            continue
        energy = zone / "energy_uj"
        if _unreadable(energy):
            locked.append(energy)
            continue
        max_range = read_int(zone / "max_energy_range_uj")
        if read_int(energy) is None or not max_range:
            continue
        found.append(RaplDomain(name, energy, max_range))
    if found:
        return found, ""
    if locked:
        return [], (
            f"not available: {locked[0]} is readable by root only (Linux 5.10+, CVE-2020-8694); "
            f"`sudo chmod o+r {base}/*/energy_uj` or run as root"
        )
    return [], f"not available: no readable package or DRAM domain under {base}"


class RaplCounter:
    """Joules summed over RAPL domains since this counter was made, each domain's wrap at max_energy_range_uj
    undone. Read it at least once per wrap period (minutes to hours at full power)."""

    def __init__(self, domains: list[RaplDomain]) -> None:
        self.domains = domains
        self.source = "rapl_" + "+".join(sorted({d.name.split("-")[0] for d in domains}))
        self._last = [read_int(d.energy_file) for d in domains]
        self._total_uj = 0

    def joules(self) -> float | None:
        for i, domain in enumerate(self.domains):
            now = read_int(domain.energy_file)
            before = self._last[i]
            if now is None or before is None:
                return None
            delta = now - before
            if delta < 0:  # the counter wrapped
                delta += domain.max_range_uj
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6


# ------------------------------------------------------------------------------ temperatures, fans


def _hwmon_values(root: Path, prefix: str, scale: float) -> list[float]:
    values = []
    for path in sorted((root / HWMON).glob(f"hwmon*/{prefix}*_input")):
        raw = read_int(path)
        if raw is not None:
            values.append(raw / scale)
    return values


def cpu_temperature(root: Path = SYSFS) -> Reading:
    """The hottest hwmon or thermal-zone temperature, in °C (both report millidegrees)."""
    values = _hwmon_values(root, "temp", 1000.0)
    for zone in sorted((root / THERMAL).glob("thermal_zone*/temp")):
        raw = read_int(zone)
        if raw is not None:
            values.append(raw / 1000.0)
    if not values:
        return unavailable(f"no hwmon or thermal_zone temperature under {root / 'class'}")
    return Reading(max(values))


def fan_rpm(root: Path = SYSFS) -> Reading:
    """The fastest fan hwmon reports, in RPM."""
    values = _hwmon_values(root, "fan", 1.0)
    return Reading(max(values)) if values else unavailable(f"no hwmon fan*_input under {root / HWMON}")


def cpu_frequency_mhz(root: Path = SYSFS) -> Reading:
    """The mean current frequency over CPUs (cpufreq's scaling_cur_freq, kHz), in MHz."""
    values = [read_int(p) for p in sorted((root / CPUS).glob("cpu[0-9]*/cpufreq/scaling_cur_freq"))]
    known = [v for v in values if v is not None]
    if not known:
        return unavailable(f"no cpufreq under {root / CPUS} (no frequency driver: a VM, or cpufreq disabled)")
    return Reading(sum(known) / len(known) / 1000.0)


def cpu_throttle_count(root: Path = SYSFS) -> Reading:
    """Times the CPUs' cores or packages were throttled for heat since boot (Intel's thermal_throttle)."""
    paths = sorted((root / CPUS).glob("cpu[0-9]*/thermal_throttle/*_throttle_count"))
    values = [v for v in (read_int(p) for p in paths) if v is not None]
    if not values:
        return unavailable(f"no thermal_throttle counts under {root / CPUS} (Intel only; not in VMs)")
    return Reading(float(sum(values)))

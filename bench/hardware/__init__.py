"""What machine is this, is it fit to benchmark on, and what does its GPU draw while we measure.

fingerprint (what a row records, the stable machine id), machine (detect), cpu (brand, flags, usable cores,
caches), nvml (every NVML call), bandwidth (the memory-bandwidth probe), noise (system warnings), sampler
(GpuSampler), sensors (sysfs: RAPL, hwmon, thermal zones, cpufreq), energy (one interface over NVML and RAPL,
idle power), state (a device's clocks, temperature, power and throttle reasons), display (the `bench hw`
tables). A backend's software is probed by its own spec.
"""

from bench.hardware.cpu import last_level_cache_bytes, physical_cores, resolve_threads, usable_cores
from bench.hardware.display import format_fingerprint, format_sensors
from bench.hardware.fingerprint import (
    ROW_FIELDS,
    STABLE_HARDWARE_COLUMNS,
    BackendSoftware,
    Fingerprint,
    GpuInfo,
    MachineColumns,
    stable_fingerprint,
)
from bench.hardware.machine import detect
from bench.hardware.noise import SystemWarning, system_warnings, warnings_text
from bench.hardware.nvml import vram_used_bytes
from bench.hardware.sampler import GpuSampler

__all__ = [
    "ROW_FIELDS",
    "STABLE_HARDWARE_COLUMNS",
    "BackendSoftware",
    "Fingerprint",
    "GpuInfo",
    "GpuSampler",
    "MachineColumns",
    "SystemWarning",
    "detect",
    "format_fingerprint",
    "format_sensors",
    "last_level_cache_bytes",
    "physical_cores",
    "resolve_threads",
    "stable_fingerprint",
    "system_warnings",
    "usable_cores",
    "vram_used_bytes",
    "warnings_text",
]

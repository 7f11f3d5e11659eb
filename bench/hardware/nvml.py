"""Every NVML call bench makes: GPU inventory in CUDA's ordinal order, and the readings the sampler and
the noise checks take. Each reading returns None when NVML cannot give it (no driver, not supported).

Tests replace `pynvml` in this module with a fake; nothing else in bench imports pynvml.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from bench.hardware.fingerprint import GpuInfo
from bench.hardware.probe import as_text, attempt

try:
    import pynvml  # from nvidia-ml-py
except ImportError:  # no nvidia-ml-py: GPU probing reports why instead of failing
    pynvml = None  # type: ignore[assignment]


class GpuProcess(NamedTuple):
    pid: int
    used_bytes: int | None  # None where the driver does not say (e.g. under MIG or without permission)


# ------------------------------------------------------------------------------ session


def start() -> str:
    """Initialise NVML; "" on success, else why not. Pair each success with shutdown() (NVML counts them)."""
    if pynvml is None:
        return "NVML not available: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - LibraryNotFound / DriverNotLoaded where there is no NVIDIA
        return f"NVML not available: {exc or type(exc).__name__}"
    return ""


def shutdown() -> None:
    if pynvml is not None:
        attempt(pynvml.nvmlShutdown)


@contextmanager
def session() -> Iterator[str]:
    """NVML initialised for the block; yields "" when it is usable, else the reason it is not."""
    reason = start()
    try:
        yield reason
    finally:
        if not reason:
            shutdown()


# ---------------------------------------------------------------------------- inventory


def cuda_visible_to_nvml(env: str | None, uuids: list[str]) -> list[int]:
    """NVML index of each CUDA ordinal. NVML lists every GPU; CUDA only CUDA_VISIBLE_DEVICES, in its order.

    (CUDA's default FASTEST_FIRST order can also differ from NVML's PCI order on mixed multi-GPU boxes;
    set CUDA_DEVICE_ORDER=PCI_BUS_ID there.)
    """
    if env is None:
        return list(range(len(uuids)))
    tokens = [t.strip() for t in env.split(",")]
    if any(t.upper().startswith("MIG-") for t in tokens):
        return list(range(len(uuids)))  # MIG instances do not map onto whole devices; NVML order it is
    order: list[int] = []
    for token in tokens:
        if token.isdigit():
            matches = [int(token)] if int(token) < len(uuids) else []
        else:
            prefix = token if token.upper().startswith("GPU-") else f"GPU-{token}"
            matches = [i for i, u in enumerate(uuids) if token and u.upper().startswith(prefix.upper())]
        if len(matches) != 1 or matches[0] in order:
            break  # CUDA hides everything from the first invalid entry on
        order.append(matches[0])
    return order


def visible_handles() -> list[Any]:
    """NVML handles in CUDA ordinal order (NVML must be initialised)."""
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    uuids = [as_text(attempt(pynvml.nvmlDeviceGetUUID, h)) for h in handles]
    return [handles[n] for n in cuda_visible_to_nvml(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)]


def handle_for(kind: str, index: int) -> Any | None:
    """The handle of cuda:<index> (NVML must be initialised); None for other kinds or an absent GPU."""
    if kind != "cuda":
        return None
    handles = attempt(visible_handles) or []
    return handles[index] if 0 <= index < len(handles) else None


def _cuda_version(raw: int | None) -> str:
    # NVML encodes 12.4 as 12040.
    return "" if not raw else f"{raw // 1000}.{raw % 1000 // 10}"


def _gpu_info(ordinal: int, handle: Any, driver: str, cuda_version: str) -> GpuInfo:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    power_mw = attempt(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    return GpuInfo(
        index=ordinal,
        name=as_text(pynvml.nvmlDeviceGetName(handle)),
        uuid=as_text(attempt(pynvml.nvmlDeviceGetUUID, handle)),
        vram_total_bytes=int(memory.total),
        vram_free_bytes=int(memory.free),
        driver=driver,
        cuda_version=cuda_version,
        power_limit_w=None if power_mw is None else power_mw / 1000.0,
        memory_bus_width_bits=attempt(pynvml.nvmlDeviceGetMemoryBusWidth, handle),
        max_memory_clock_mhz=attempt(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM),
    )


def probe_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    """Every GPU CUDA can see, and "ok" or why NVML could not be asked."""
    with session() as reason:
        if reason:
            return (), reason
        try:
            driver = as_text(attempt(pynvml.nvmlSystemGetDriverVersion))
            cuda_version = _cuda_version(attempt(pynvml.nvmlSystemGetCudaDriverVersion))
            handles = visible_handles()
            return tuple(_gpu_info(i, h, driver, cuda_version) for i, h in enumerate(handles)), "ok"
        except Exception as exc:  # noqa: BLE001 - detect() never raises; the status says what broke
            return (), f"NVML not available: querying the GPUs failed: {exc or type(exc).__name__}"


def vram_used_bytes(kind: str, index: int) -> int | None:
    """Device memory in use on cuda:<index> right now (all processes); None without NVML or that GPU.

    Taken before a model is loaded, it is the baseline GpuSampler subtracts where NVML cannot attribute
    memory to our process.
    """
    with session() as reason:
        handle = None if reason else handle_for(kind, index)
        return None if handle is None else memory_used(handle)


# ----------------------------------------------------------------------------- readings


def device_name(handle: Any) -> str:
    return as_text(attempt(pynvml.nvmlDeviceGetName, handle))


def memory_used(handle: Any) -> int | None:
    return attempt(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))


def compute_processes(handle: Any) -> list[GpuProcess] | None:
    found = attempt(pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
    if found is None:
        return None
    return [GpuProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory)) for p in found]


def energy_mj(handle: Any) -> int | None:
    """The GPU's energy counter in millijoules since the driver loaded (Volta and newer)."""
    return attempt(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle)


def power_w(handle: Any) -> float | None:
    milliwatts = attempt(pynvml.nvmlDeviceGetPowerUsage, handle)
    return None if milliwatts is None else milliwatts / 1000.0


def persistence_off(handle: Any) -> bool | None:
    mode = attempt(pynvml.nvmlDeviceGetPersistenceMode, handle)
    return None if mode is None else mode == getattr(pynvml, "NVML_FEATURE_DISABLED", 0)


def clock_event_reasons(handle: Any) -> int | None:
    """Bit mask of why clocks are held down (nvmlClocksEventReason*), None when unsupported."""
    for getter in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(pynvml, getter, None)  # renamed in newer NVML; older drivers lack the new symbol
        mask = attempt(fn, handle) if fn else None
        if mask is not None:
            return int(mask)
    return None


# nvmlClocksEventReason* bits (nvml.h; stable across driver versions), named as bench reports them.
CLOCK_EVENT_NAMES: dict[int, str] = {
    0x001: "GPU idle",
    0x002: "applications clocks setting",
    0x004: "power cap",
    0x008: "HW slowdown",
    0x010: "sync boost",
    0x020: "thermal slowdown",
    0x040: "HW thermal slowdown",
    0x080: "HW power brake slowdown",
    0x100: "display clock setting",
}
SLOWDOWN_BITS = 0x004 | 0x008 | 0x020 | 0x040 | 0x080  # the reasons that mean "slowed by heat or power"


def clock_event_names(mask: int | None, slowdown_only: bool = True) -> list[str]:
    """The reasons a clock-event mask holds, in words (only heat and power ones unless slowdown_only=False)."""
    if not mask:
        return []
    wanted = SLOWDOWN_BITS if slowdown_only else ~0
    return [name for bit, name in CLOCK_EVENT_NAMES.items() if mask & bit & wanted]


def clock_mhz(handle: Any, which: str) -> int | None:
    """The current SM ("sm") or memory ("mem") clock in MHz."""
    domain = getattr(pynvml, "NVML_CLOCK_SM" if which == "sm" else "NVML_CLOCK_MEM", None)
    return None if domain is None else attempt(pynvml.nvmlDeviceGetClockInfo, handle, domain)


def temperature_c(handle: Any) -> int | None:
    sensor = getattr(pynvml, "NVML_TEMPERATURE_GPU", 0)
    return attempt(pynvml.nvmlDeviceGetTemperature, handle, sensor)

"""What machine is this, is it fit to benchmark on, and what does its GPU draw while we measure.

Everything here must work on a laptop without NVIDIA, llama.cpp or torch: pynvml and cpuinfo are
imported guarded, llama_cpp and torch only lazily inside the functions that need them, and the
probes never raise (a benchmark run must not die because a sensor could not be read).
"""
from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import psutil

if TYPE_CHECKING:
    from rich.table import Table

try:
    import pynvml  # from nvidia-ml-py
except ImportError:  # no nvidia-ml-py: GPU probing reports why instead of failing
    pynvml = None  # type: ignore[assignment]

try:
    import cpuinfo  # from py-cpuinfo
except ImportError:  # /proc/cpuinfo and platform still give a usable answer
    cpuinfo = None  # type: ignore[assignment]

T = TypeVar("T")

# CPU features that decide which llama.cpp / torch kernels can run; every other flag is noise.
KNOWN_CPU_FLAGS: tuple[str, ...] = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx512vbmi", "avx_vnni",
    "amx_tile", "amx_int8", "amx_bf16", "neon", "sve", "dotprod", "i8mm",
)
# Spellings used by py-cpuinfo (cpuid), Windows and ARM Linux for the same features.
_FLAG_ALIASES: dict[str, str] = {
    "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avx512_vbmi": "avx512vbmi",
    "avxvnni": "avx_vnni", "amxtile": "amx_tile", "amxint8": "amx_int8", "amxbf16": "amx_bf16",
    "fma3": "fma", "asimd": "neon", "asimddp": "dotprod",
}

# The CSV columns row_fields() fills, in this order (bench.results.ResultRow has the same names).
ROW_FIELDS: tuple[str, ...] = (
    "host", "os", "cpu_brand", "cpu_arch", "cpu_physical_cores", "cpu_logical_cores", "cpu_flags",
    "ram_total_bytes", "ram_available_bytes", "gpu_name", "gpu_vram_total_bytes", "gpu_vram_free_bytes",
    "gpu_driver", "cuda_version", "gpu_power_limit_w", "gpu_count", "fingerprint", "bench_version",
    "python_version", "llama_cpp_python_version", "llama_cpp_build", "torch_version",
)

# Module-level so tests can point them at a fake tree.
CPU_SYSFS = Path("/sys/devices/system/cpu")
PROC_CPUINFO = Path("/proc/cpuinfo")

CPU_BUSY_PERCENT = 20.0  # system-wide CPU use above this before a run means someone else is working
LOAD_SAMPLE_S = 0.5  # how long system_warnings() watches the CPU
HOT_CELSIUS = 85.0  # used when a sensor reports no (or a nonsensical) "high" threshold
LOW_RAM_FRACTION = 0.10
SWAP_USED_BYTES = 256 * 2**20

# NVML clock-event reason bits that mean "slowed by heat or power" (nvml.h, nvmlClocksEventReason*).
_GPU_SLOWDOWN_REASONS: dict[int, str] = {
    0x04: "software power cap",
    0x08: "hardware slowdown",
    0x20: "software thermal slowdown",
    0x40: "hardware thermal slowdown",
    0x80: "hardware power brake",
}


# --------------------------------------------------------------------------------------- data


# What identifies a machine across driver, kernel and bench updates: hardware only, RAM to the GiB (the
# kernel's MemTotal moves by a few MiB between versions). Every result row carries these columns, so the id
# can be recomputed from a row, also from CSVs written before this rule.
STABLE_HARDWARE_COLUMNS = ("host", "cpu_brand", "cpu_physical_cores", "cpu_logical_cores", "ram_total_bytes",
                           "gpu_count")


def stable_fingerprint(fields: Mapping[str, Any]) -> str:
    """The machine id from its stable hardware columns (a result row, or a live Fingerprint's values)."""
    def number(name: str) -> int:
        value = fields.get(name)
        try:
            return int(float(value)) if value not in (None, "") else 0
        except (TypeError, ValueError):
            return 0

    hardware = [str(fields.get("host") or ""), str(fields.get("cpu_brand") or ""), number("cpu_physical_cores"),
                number("cpu_logical_cores"), round(number("ram_total_bytes") / 2**30), number("gpu_count")]
    return hashlib.sha256(json.dumps(hardware).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it; `index` is the CUDA ordinal (cuda:<index>)."""

    index: int
    name: str
    uuid: str
    vram_total_bytes: int
    vram_free_bytes: int
    driver: str
    cuda_version: str
    power_limit_w: float | None
    memory_bus_width_bits: int | None
    max_memory_clock_mhz: int | None

    def memory_bandwidth_gbs(self) -> float | None:
        """Theoretical peak: bytes per transfer x transfers/s (DDR: 2 per clock). Decode speed is bound by it."""
        if not self.memory_bus_width_bits or not self.max_memory_clock_mhz:
            return None
        return self.memory_bus_width_bits / 8 * self.max_memory_clock_mhz * 2 / 1e3


@dataclass(frozen=True)
class Fingerprint:
    """The machine and software a result was measured on; recorded in every result row."""

    host: str
    os: str
    cpu_brand: str
    cpu_arch: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    cpu_flags: tuple[str, ...]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: tuple[GpuInfo, ...]
    nvml_status: str
    python_version: str
    bench_version: str
    llama_cpp_python_version: str
    llama_cpp_build: str
    llama_cpp_gpu_offload: bool
    torch_version: str

    def fingerprint_id(self) -> str:
        """Short stable id of the hardware: same machine, same id, whatever is free right now."""
        return stable_fingerprint({"host": self.host, "cpu_brand": self.cpu_brand,
                                   "cpu_physical_cores": self.cpu_physical_cores,
                                   "cpu_logical_cores": self.cpu_logical_cores,
                                   "ram_total_bytes": self.ram_total_bytes, "gpu_count": len(self.gpus)})

    def row_fields(self, device_kind: str, device_index: int) -> dict[str, object]:
        """The machine columns of a result row; GPU columns describe the GPU the cell ran on, if any."""
        gpu = self._gpu(device_kind, device_index)
        fields: dict[str, object] = {
            "host": self.host,
            "os": self.os,
            "cpu_brand": self.cpu_brand,
            "cpu_arch": self.cpu_arch,
            "cpu_physical_cores": self.cpu_physical_cores,
            "cpu_logical_cores": self.cpu_logical_cores,
            "cpu_flags": " ".join(self.cpu_flags),
            "ram_total_bytes": self.ram_total_bytes,
            "ram_available_bytes": self.ram_available_bytes,
            "gpu_name": gpu.name if gpu else "",
            "gpu_vram_total_bytes": gpu.vram_total_bytes if gpu else None,
            "gpu_vram_free_bytes": gpu.vram_free_bytes if gpu else None,
            "gpu_driver": gpu.driver if gpu else "",
            "cuda_version": gpu.cuda_version if gpu else "",
            "gpu_power_limit_w": gpu.power_limit_w if gpu else None,
            "gpu_count": len(self.gpus),
            "fingerprint": self.fingerprint_id(),
            "bench_version": self.bench_version,
            "python_version": self.python_version,
            "llama_cpp_python_version": self.llama_cpp_python_version,
            "llama_cpp_build": self.llama_cpp_build,
            "torch_version": self.torch_version,
        }
        return {name: fields[name] for name in ROW_FIELDS}

    def _gpu(self, device_kind: str, device_index: int) -> GpuInfo | None:
        # An absent device gives blanks, not an error: skipped cells are still written as rows.
        if device_kind != "cuda" or not 0 <= device_index < len(self.gpus):
            return None
        return self.gpus[device_index]


@dataclass(frozen=True)
class SystemWarning:
    """Something about the machine that makes results slower or noisier, and how to fix it."""

    name: str
    message: str
    fix: str


# ----------------------------------------------------------------------------------- helpers


def _try(fn: Callable[..., T], *args: Any) -> T | None:
    """Call a probe that may legitimately fail (feature not supported, no permission): None instead."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - probes must never take a benchmark run down
        return None


def _text(value: object) -> str:
    # Older pynvml and llama_cpp return bytes, newer return str.
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def _dist_version(name: str) -> str:
    # Reads package metadata only: importing torch just to learn its version costs seconds.
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _normalise_cpu_flags(raw: Iterable[str]) -> tuple[str, ...]:
    """Map every spelling onto KNOWN_CPU_FLAGS names and keep only those, in KNOWN_CPU_FLAGS order."""
    present = set()
    for flag in raw:
        name = flag.strip().lower().replace("-", "_")
        present.add(_FLAG_ALIASES.get(name, name))
    return tuple(f for f in KNOWN_CPU_FLAGS if f in present)


def _read_proc_cpuinfo() -> tuple[str, set[str]]:
    # The kernel's view is the truthful one: it hides features it has disabled (e.g. AVX-512 without XSAVE).
    brand, flags = "", set()
    try:
        text = PROC_CPUINFO.read_text(errors="replace")
    except OSError:
        return brand, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and not brand:
            brand = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return brand, flags


def _darwin_arm_flags() -> set[str]:
    # Apple Silicon: no /proc/cpuinfo and py-cpuinfo lists no ARM features; sysctl knows them.
    flags = {"neon"}
    for flag, key in (("dotprod", "hw.optional.arm.FEAT_DotProd"), ("i8mm", "hw.optional.arm.FEAT_I8MM")):
        out = _try(subprocess.run, ["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
        if out is not None and out.stdout.strip() == "1":
            flags.add(flag)
    return flags


def _cpu_brand_and_flags() -> tuple[str, tuple[str, ...]]:
    brand, raw = _read_proc_cpuinfo()
    if (not brand or not raw) and cpuinfo is not None:
        # py-cpuinfo is slow (about a second), so only when the kernel did not answer.
        info = _try(cpuinfo.get_cpu_info) or {}
        brand = brand or _text(info.get("brand_raw"))
        raw |= {_text(f) for f in info.get("flags", [])}
    if platform.system() == "Darwin" and platform.machine() in ("arm64", "aarch64"):
        raw |= _darwin_arm_flags()
    return brand or platform.processor() or "unknown", _normalise_cpu_flags(raw)


# -------------------------------------------------------------------------------------- NVML


def _cuda_visible_to_nvml(env: str | None, uuids: list[str]) -> list[int]:
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


def _visible_handles() -> list[Any]:
    """NVML handles in CUDA ordinal order (NVML must be initialised)."""
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    uuids = [_text(_try(pynvml.nvmlDeviceGetUUID, h)) for h in handles]
    return [handles[n] for n in _cuda_visible_to_nvml(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)]


def _nvml_start() -> str:
    """Initialise NVML; "" on success, else why not (NVML reference-counts init/shutdown)."""
    if pynvml is None:
        return "NVML not available: nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - LibraryNotFound / DriverNotLoaded where there is no NVIDIA
        return f"NVML not available: {exc or type(exc).__name__}"
    return ""


def _cuda_version(raw: int | None) -> str:
    # NVML encodes 12.4 as 12040.
    return "" if not raw else f"{raw // 1000}.{raw % 1000 // 10}"


def _gpu_info(ordinal: int, handle: Any, driver: str, cuda_version: str) -> GpuInfo:
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    power_mw = _try(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle)
    return GpuInfo(
        index=ordinal,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        uuid=_text(_try(pynvml.nvmlDeviceGetUUID, handle)),
        vram_total_bytes=int(memory.total),
        vram_free_bytes=int(memory.free),
        driver=driver,
        cuda_version=cuda_version,
        power_limit_w=None if power_mw is None else power_mw / 1000.0,
        memory_bus_width_bits=_try(pynvml.nvmlDeviceGetMemoryBusWidth, handle),
        max_memory_clock_mhz=_try(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_MEM),
    )


def _probe_gpus() -> tuple[tuple[GpuInfo, ...], str]:
    reason = _nvml_start()
    if reason:
        return (), reason
    try:
        driver = _text(_try(pynvml.nvmlSystemGetDriverVersion))
        cuda_version = _cuda_version(_try(pynvml.nvmlSystemGetCudaDriverVersion))
        handles = _visible_handles()
        return tuple(_gpu_info(i, h, driver, cuda_version) for i, h in enumerate(handles)), "ok"
    except Exception as exc:  # noqa: BLE001 - detect() never raises; the status says what broke
        return (), f"NVML not available: querying the GPUs failed: {exc or type(exc).__name__}"
    finally:
        _try(pynvml.nvmlShutdown)


# --------------------------------------------------------------------------------- llama.cpp


def _summarise_system_info(text: str) -> str:
    """'CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : AVX = 1 | AVX512 = 0 |' -> 'CUDA: ARCHS=900 USE_GRAPHS; CPU: AVX'."""
    sections: dict[str, list[str]] = {}
    backend = ""
    for token in text.split("|"):
        head, colon, rest = token.partition(":")
        if colon and "=" not in head:  # "BACKEND : KEY = VALUE" starts a new backend
            backend, token = head.strip(), rest
        key, equals, value = (part.strip() for part in token.partition("="))
        items = sections.setdefault(backend, [])
        if key and value != "0":  # features compiled out are noise
            items.append(key if not equals or value == "1" else f"{key}={value}")
    return "; ".join(f"{name}: {' '.join(items)}" if name else " ".join(items)
                     for name, items in sections.items() if name or items)


def _ggml_version(llama_cpp: Any) -> str:
    # Recent ggml exports ggml_version()/ggml_commit(); reachable through the loaded libllama handle.
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    found = {}
    for symbol in ("ggml_version", "ggml_commit"):
        fn = _try(getattr, lib, symbol)
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_char_p, []
            found[symbol] = _text(_try(fn))
    version, commit = found.get("ggml_version", ""), found.get("ggml_commit", "")
    return f"{version} (commit {commit})".strip() if commit else version


def _probe_llama_cpp() -> tuple[str, str, bool]:
    """(llama-cpp-python version, llama.cpp build summary, GPU offload compiled in)."""
    version = _dist_version("llama_cpp_python")
    try:
        import llama_cpp  # lazily: loading the shared library (and CUDA) is slow
    except Exception:  # noqa: BLE001 - not installed or a broken build: both mean "no llama.cpp here"
        return version, "", False
    version = version or _text(getattr(llama_cpp, "__version__", ""))
    ggml = _ggml_version(llama_cpp)
    info = _summarise_system_info(_text(_try(llama_cpp.llama_print_system_info)))
    build = "; ".join(p for p in (f"ggml {ggml}" if ggml else "", info) if p)
    offload = bool(_try(llama_cpp.llama_supports_gpu_offload))
    return version, build, offload


# ------------------------------------------------------------------------------------ detect


def _bench_version() -> str:
    from bench import __version__  # lazily: bench/__init__ may one day import this module

    return __version__


def detect() -> Fingerprint:
    """Probe this machine. Never raises: what cannot be read is reported empty, with NVML saying why."""
    brand, flags = _try(_cpu_brand_and_flags) or ("unknown", ())
    memory = _try(psutil.virtual_memory)
    logical = _try(psutil.cpu_count) or os.cpu_count() or 1
    physical = _try(psutil.cpu_count, False) or logical
    gpus, nvml_status = _try(_probe_gpus) or ((), "NVML not available: probe failed")
    llama_version, llama_build, offload = _try(_probe_llama_cpp) or ("", "", False)
    return Fingerprint(
        host=_try(socket.gethostname) or platform.node(),
        os=platform.platform(),
        cpu_brand=brand,
        cpu_arch=platform.machine(),
        cpu_physical_cores=physical,
        cpu_logical_cores=logical,
        cpu_flags=flags,
        ram_total_bytes=int(memory.total) if memory else 0,
        ram_available_bytes=int(memory.available) if memory else 0,
        gpus=gpus,
        nvml_status=nvml_status,
        python_version=platform.python_version(),
        bench_version=_try(_bench_version) or "",
        llama_cpp_python_version=llama_version,
        llama_cpp_build=llama_build,
        llama_cpp_gpu_offload=offload,
        torch_version=_dist_version("torch"),
    )


def _torch_cuda_reason(fp: Fingerprint, index: int) -> str:
    """Why torch cannot run on cuda:<index>, or "" if it can."""
    if not fp.torch_version:
        return "torch is not installed; pip install -e '.[torch]' (and a CUDA build of torch for GPUs)"
    try:
        import torch  # lazily: importing torch takes seconds
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a reason, not a crash
        return f"torch {fp.torch_version} failed to import: {exc}"
    if not torch.cuda.is_available():
        return (f"torch {fp.torch_version} cannot use CUDA (torch.cuda.is_available() is False); "
                "install a CUDA build of torch")
    if index >= torch.cuda.device_count():
        return f"torch sees only {torch.cuda.device_count()} CUDA device(s); cuda:{index} is not one of them"
    return ""


def device_available(fp: Fingerprint, kind: str, index: int, backend: str) -> tuple[bool, str]:
    """Can `backend` run on device kind:index here? (False, reason) says exactly what is missing."""
    if kind == "cpu":
        return True, ""
    if kind != "cuda":
        return False, f"unknown device kind {kind!r}; expected 'cpu' or 'cuda'"
    if fp.nvml_status != "ok":
        return False, f"device cuda:{index} unavailable: {fp.nvml_status}"
    if not 0 <= index < len(fp.gpus):
        names = ", ".join(g.name for g in fp.gpus)
        return False, (f"device cuda:{index} absent: this machine has {len(fp.gpus)} NVIDIA GPU(s)"
                       + (f" ({names})" if names else ""))
    if backend == "llamacpp":
        if not fp.llama_cpp_python_version:
            return False, "llama-cpp-python is not installed"
        if not fp.llama_cpp_gpu_offload:
            return False, ("llama-cpp-python on this machine was built without GPU offload; "
                           "reinstall with CMAKE_ARGS=-DGGML_CUDA=on")
    if backend == "torch":
        reason = _torch_cuda_reason(fp, index)
        if reason:
            return False, reason
    return True, ""


# ------------------------------------------------------------------------------- warnings


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _governor_warnings() -> list[SystemWarning]:
    governors: dict[str, str] = {}
    for path in sorted(CPU_SYSFS.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = _try(path.read_text)
        if value is not None:
            governors[path.parent.parent.name] = value.strip()
    slow = sorted({g for g in governors.values() if g != "performance"})
    if not slow:
        return []
    count = sum(g != "performance" for g in governors.values())
    return [SystemWarning(
        "cpu_governor",
        f"CPU frequency governor is {'/'.join(slow)} on {count} of {len(governors)} CPUs, not performance: "
        "clocks ramp up during the run and the first measurements are slow",
        "sudo cpupower frequency-set -g performance",
    )]


def _boost_warnings() -> list[SystemWarning]:
    no_turbo = CPU_SYSFS / "intel_pstate" / "no_turbo"
    boost = CPU_SYSFS / "cpufreq" / "boost"
    if _read_int(no_turbo) == 0:
        fix = f"for stable numbers: echo 1 | sudo tee {no_turbo}"
    elif _read_int(boost) == 1:
        fix = f"for stable numbers: echo 0 | sudo tee {boost}"
    else:
        return []
    return [SystemWarning(
        "cpu_boost",
        "CPU turbo/boost is on: clocks depend on temperature and on how many cores are busy, "
        "so results vary from run to run",
        fix,
    )]


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
    return [SystemWarning(
        "cpu_thermal",
        f"hot sensors: {', '.join(hot[:5])}: the CPU is probably throttling",
        "let the machine cool down and check fans and airflow before benchmarking",
    )]


def _cpu_load_warnings() -> list[SystemWarning]:
    me = psutil.Process()
    own = {me.pid} | {c.pid for c in _try(me.children, True) or []}
    procs = []
    for proc in psutil.process_iter(["name"]):
        if proc.pid not in own and _try(proc.cpu_percent, None) is not None:  # first call starts the clock
            procs.append(proc)
    busy = psutil.cpu_percent(interval=LOAD_SAMPLE_S)
    if busy <= CPU_BUSY_PERCENT:
        return []
    usage = [(_try(p.cpu_percent, None) or 0.0, p) for p in procs]
    top = sorted(usage, key=lambda u: u[0], reverse=True)[:3]
    names = ", ".join(f"{p.info.get('name') or '?'} (pid {p.pid}, {pct:.0f}%)" for pct, p in top)
    return [SystemWarning(
        "cpu_load",
        f"the CPU is {busy:.0f}% busy before the benchmark starts; top: {names}",
        "stop or pause those processes (or use an idle machine): they take cores and memory bandwidth",
    )]


def _ram_warnings() -> list[SystemWarning]:
    memory = psutil.virtual_memory()
    if memory.available >= LOW_RAM_FRACTION * memory.total:
        return []
    return [SystemWarning(
        "low_ram",
        f"only {memory.available / 2**30:.1f} GiB of {memory.total / 2**30:.1f} GiB RAM is available: "
        "models may be paged from disk, and then the benchmark measures the disk",
        "close memory-hungry programs before benchmarking",
    )]


def _swap_warnings() -> list[SystemWarning]:
    used = psutil.swap_memory().used
    if used <= SWAP_USED_BYTES:
        return []
    return [SystemWarning(
        "swap_in_use",
        f"{used / 2**20:.0f} MiB of swap is in use: pages swapped back in during a run stall it",
        "free some memory, then empty swap: sudo swapoff -a && sudo swapon -a",
    )]


def _gpu_slowdown_warning(handle: Any, label: str) -> SystemWarning | None:
    mask = None
    for getter in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(pynvml, getter, None)  # renamed in newer NVML; older drivers lack the new symbol
        mask = _try(fn, handle) if fn else None
        if mask is not None:
            break
    active = [text for bit, text in _GPU_SLOWDOWN_REASONS.items() if mask and int(mask) & bit]
    if not active:
        return None
    return SystemWarning(
        "gpu_throttle",
        f"{label} clocks are held down: {', '.join(active)}",
        "let the GPU cool down and check its cooling and power cables; "
        "`nvidia-smi -q -d PERFORMANCE` shows the cause",
    )


def _gpu_process_warning(handle: Any, label: str) -> SystemWarning | None:
    others = [p for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid != os.getpid()]
    if not others:
        return None
    described = []
    for proc in others[:5]:
        name = _try(lambda pid=proc.pid: psutil.Process(pid).name()) or "?"
        mib = f", {proc.usedGpuMemory / 2**20:.0f} MiB" if proc.usedGpuMemory else ""
        described.append(f"{name} (pid {proc.pid}{mib})")
    return SystemWarning(
        "gpu_busy",
        f"{label} is used by {len(others)} other process(es): {', '.join(described)}",
        "stop them before benchmarking (`nvidia-smi` lists them): they share its compute and VRAM",
    )


def _gpu_persistence_warning(handle: Any, label: str) -> SystemWarning | None:
    if pynvml.nvmlDeviceGetPersistenceMode(handle) != getattr(pynvml, "NVML_FEATURE_DISABLED", 0):
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
    if _nvml_start():
        return []
    try:
        found = []
        for ordinal, handle in enumerate(_visible_handles()):
            label = f"cuda:{ordinal} ({_text(_try(pynvml.nvmlDeviceGetName, handle))})"
            for check in (_gpu_slowdown_warning, _gpu_process_warning, _gpu_persistence_warning):
                found.append(_try(check, handle, label))
        return [w for w in found if w is not None]
    finally:
        _try(pynvml.nvmlShutdown)


def system_warnings(fp: Fingerprint | None = None) -> list[SystemWarning]:
    """What on this machine will make results slow or noisy (like `pyperf system show`), each with its fix.

    Takes about LOAD_SAMPLE_S seconds (it watches the CPU load). A check whose source cannot be read
    is skipped silently: a missing sensor is not a problem with the machine.
    """
    checks: list[Callable[[], list[SystemWarning]]] = [
        _governor_warnings, _boost_warnings, _temperature_warnings, _cpu_load_warnings,
        _ram_warnings, _swap_warnings, lambda: _gpu_warnings(fp),
    ]
    found: list[SystemWarning] = []
    for check in checks:
        found.extend(_try(check) or [])
    return found


# -------------------------------------------------------------------------------- sampling


class GpuSampler:
    """Context manager sampling one NVIDIA GPU through NVML in a background thread every `interval_s`.

    Measures the peak VRAM used by this process (NVML's per-process figure for os.getpid(); where NVML
    cannot attribute memory to us, e.g. inside a PID namespace, device memory used minus used at start),
    energy in joules since mark() (the GPU's energy counter; else power samples integrated) and the
    average power over that window. Enter it before loading the model so the load counts in the peak.
    Note the energy counter and power readings update every ~100 ms-1 s: windows shorter than that are coarse.
    With NVML absent, kind != "cuda" or no such GPU it is a no-op whose results are None.
    """

    def __init__(self, kind: str, index: int, interval_s: float = 0.05) -> None:
        self.kind = kind
        self.index = index
        self.interval_s = interval_s
        self.peak_vram_bytes: int | None = None
        self._handle: Any = None  # set while sampling
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline_used = 0
        self._peak_own: int | None = None  # from NVML's per-process list, once we appear in it
        self._peak_delta = 0  # device used minus baseline: the fallback
        self._has_energy_counter = False
        self._mark_t = 0.0
        self._mark_mj: int | None = None
        self._joules = 0.0  # power integrated since mark (fallback when there is no energy counter)
        self._last_power: tuple[float, float] | None = None  # (time, watts) of the latest sample
        self._final: tuple[float | None, float] | None = None  # (joules, seconds) frozen at exit

    def __enter__(self) -> Self:
        if self.kind != "cuda" or _nvml_start():
            return self
        handles = _try(_visible_handles) or []
        if not 0 <= self.index < len(handles):
            _try(pynvml.nvmlShutdown)
            return self
        handle = handles[self.index]
        used = _try(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
        self._baseline_used = used or 0
        self._has_energy_counter = _try(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle) is not None
        self._handle = handle
        self._sample()
        self.mark()
        self._thread = threading.Thread(target=self._run, name=f"GpuSampler-cuda:{self.index}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._final = (self._energy_now(), time.perf_counter() - self._mark_t)
        self._handle = None
        _try(pynvml.nvmlShutdown)

    def mark(self) -> None:
        """Start of the measured window: energy and average power count from here."""
        if self._handle is None:
            return
        mj = _try(pynvml.nvmlDeviceGetTotalEnergyConsumption, self._handle) if self._has_energy_counter else None
        with self._lock:
            self._mark_t = time.perf_counter()
            self._mark_mj = mj
            self._joules = 0.0
            if self._last_power is not None:  # integrate from the mark on, at the last known power
                self._last_power = (self._mark_t, self._last_power[1])

    def energy_j_since_mark(self) -> float | None:
        if self._final is not None:
            return self._final[0]
        return None if self._handle is None else self._energy_now()

    @property
    def avg_power_w(self) -> float | None:
        if self._final is not None:
            joules, seconds = self._final
        elif self._handle is not None:
            joules, seconds = self._energy_now(), time.perf_counter() - self._mark_t
        else:
            return None
        return None if joules is None or seconds <= 0 else joules / seconds

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            _try(self._sample)  # one failed read must not end the sampling

    def _sample(self) -> None:
        handle = self._handle
        own = self._own_memory(handle)
        used = _try(lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used))
        watts = None
        if not self._has_energy_counter:
            milliwatts = _try(pynvml.nvmlDeviceGetPowerUsage, handle)
            watts = None if milliwatts is None else milliwatts / 1000.0
        now = time.perf_counter()
        with self._lock:
            if own is not None:
                self._peak_own = max(self._peak_own or 0, own)
            if used is not None:
                self._peak_delta = max(self._peak_delta, used - self._baseline_used)
            if watts is not None:
                if self._last_power is not None:  # trapezoid between consecutive samples
                    then, before = self._last_power
                    self._joules += (now - then) * (before + watts) / 2
                self._last_power = (now, watts)
            self.peak_vram_bytes = self._peak_own if self._peak_own is not None else self._peak_delta

    @staticmethod
    def _own_memory(handle: Any) -> int | None:
        for proc in _try(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        return None

    def _energy_now(self) -> float | None:
        if self._has_energy_counter:
            mj = _try(pynvml.nvmlDeviceGetTotalEnergyConsumption, self._handle)
            return None if mj is None or self._mark_mj is None else (mj - self._mark_mj) / 1000.0
        with self._lock:
            if self._last_power is None:
                return None
            then, watts = self._last_power
            return self._joules + (time.perf_counter() - then) * watts  # plus the stretch since the last sample


# ------------------------------------------------------------------------------- display


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / 2**30:.1f} GiB"


def _gpu_line(gpu: GpuInfo) -> str:
    bandwidth = gpu.memory_bandwidth_gbs()
    parts = [
        gpu.name,
        f"{_gib(gpu.vram_total_bytes)} total, {_gib(gpu.vram_free_bytes)} free",
        f"driver {gpu.driver}, CUDA {gpu.cuda_version}",
        "" if gpu.power_limit_w is None else f"power limit {gpu.power_limit_w:.0f} W",
        "" if bandwidth is None else f"~{bandwidth:.0f} GB/s memory bandwidth",
        gpu.uuid,
    ]
    return " | ".join(p for p in parts if p)


def format_fingerprint(fp: Fingerprint, warnings: list[SystemWarning] | None = None) -> Table:
    """The `bench hw` table: every field, one row per GPU, then the warnings with their fixes.

    `warnings` defaults to system_warnings(fp) (which takes about LOAD_SAMPLE_S seconds).
    """
    from rich.table import Table
    from rich.text import Text  # Text, not markup: values like flags or process names may contain '['

    if warnings is None:
        warnings = system_warnings(fp)
    table = Table(title=f"hardware fingerprint {fp.fingerprint_id()}", show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value")
    for name, value in (
        ("host", fp.host), ("os", fp.os), ("cpu_brand", fp.cpu_brand), ("cpu_arch", fp.cpu_arch),
        ("cpu_cores", f"{fp.cpu_physical_cores} physical, {fp.cpu_logical_cores} logical"),
        ("cpu_flags", " ".join(fp.cpu_flags) or "(none of interest)"),
        ("ram", f"{_gib(fp.ram_total_bytes)} total, {_gib(fp.ram_available_bytes)} available"),
        ("nvml", fp.nvml_status), ("python", fp.python_version), ("bench", fp.bench_version),
        ("llama_cpp_python", fp.llama_cpp_python_version or "(not installed)"),
        ("llama_cpp_build", fp.llama_cpp_build), ("llama_cpp_gpu_offload", str(fp.llama_cpp_gpu_offload)),
        ("torch", fp.torch_version or "(not installed)"),
    ):
        table.add_row(name, Text(value))
    for gpu in fp.gpus:
        table.add_row(f"gpu cuda:{gpu.index}", Text(_gpu_line(gpu)))
    table.add_section()
    for warning in warnings:
        table.add_row(Text(f"warning: {warning.name}", style="yellow"),
                      Text(f"{warning.message}\nfix: {warning.fix}"))
    if not warnings:
        table.add_row("warnings", Text("none"))
    return table


def resolve_threads(requested: int) -> int:
    """0 -> every usable core: physical cores within this process's CPU affinity."""
    if requested > 0:
        return requested
    physical = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    return max(1, min(physical, len(os.sched_getaffinity(0))))

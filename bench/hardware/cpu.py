"""The CPU: brand and the features kernels dispatch on, cores, how many of them this process may use, caches.

Every path is a module-level constant so tests can point it at a fake sysfs, procfs or cgroup tree.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path

import psutil

from bench.hardware.probe import as_text, attempt, read_int, read_text

try:
    import cpuinfo  # from py-cpuinfo
except ImportError:  # /proc/cpuinfo and platform still give a usable answer
    cpuinfo = None  # type: ignore[assignment]

CPU_SYSFS = Path("/sys/devices/system/cpu")
PROC_CPUINFO = Path("/proc/cpuinfo")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")  # cgroup v2 unified mount; v1 mounts one directory per controller here

# CPU features that decide which llama.cpp / torch kernels can run; every other flag is noise.
KNOWN_CPU_FLAGS: tuple[str, ...] = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512vbmi",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "neon",
    "sve",
    "dotprod",
    "i8mm",
)
# Spellings used by py-cpuinfo (cpuid), Windows and ARM Linux for the same features.
_FLAG_ALIASES: dict[str, str] = {
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512_vbmi": "avx512vbmi",
    "avxvnni": "avx_vnni",
    "amxtile": "amx_tile",
    "amxint8": "amx_int8",
    "amxbf16": "amx_bf16",
    "fma3": "fma",
    "asimd": "neon",
    "asimddp": "dotprod",
}
_SIZE_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}


# ------------------------------------------------------------------------------- brand, flags


def normalise_cpu_flags(raw: Iterable[str]) -> tuple[str, ...]:
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
        out = attempt(subprocess.run, ["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
        if out is not None and out.stdout.strip() == "1":
            flags.add(flag)
    return flags


def cpu_brand_and_flags() -> tuple[str, tuple[str, ...]]:
    """('AMD EPYC 9654 96-Core Processor', ('avx', 'avx2', ...)); 'unknown' when nothing says."""
    brand, raw = _read_proc_cpuinfo()
    if (not brand or not raw) and cpuinfo is not None:
        # py-cpuinfo is slow (about a second), so only when the kernel did not answer.
        info = attempt(cpuinfo.get_cpu_info) or {}
        brand = brand or as_text(info.get("brand_raw"))
        raw |= {as_text(f) for f in info.get("flags", [])}
    if platform.system() == "Darwin" and platform.machine() in ("arm64", "aarch64"):
        raw |= _darwin_arm_flags()
    return brand or platform.processor() or "unknown", normalise_cpu_flags(raw)


# ---------------------------------------------------------------------------------- cores


def logical_cores() -> int:
    return attempt(psutil.cpu_count) or os.cpu_count() or 1


def physical_cores() -> int:
    """Cores of the whole machine, SMT siblings counted once (logical count where that is unknown)."""
    return attempt(psutil.cpu_count, False) or logical_cores()


def _affinity() -> set[int] | None:
    # Linux: the CPUs this process may run on (taskset, `docker --cpuset-cpus`); elsewhere unknown.
    getaffinity = getattr(os, "sched_getaffinity", None)
    return attempt(getaffinity, 0) if getaffinity else None


def _physical_cores_among(cpus: set[int]) -> int:
    """Distinct cores among these logical CPUs (from sysfs topology); len(cpus) where topology is unreadable."""
    cores = set()
    for cpu in cpus:
        topology = CPU_SYSFS / f"cpu{cpu}" / "topology"
        core, package = read_int(topology / "core_id"), read_int(topology / "physical_package_id")
        if core is None:
            return len(cpus)
        cores.add((package, core))
    return len(cores)


def _own_cgroup_dirs(root: Path, controller: str) -> list[Path]:
    """This process's cgroup directory under `root` and its ancestors up to `root`, innermost first.

    /proc/self/cgroup names the group relative to the hierarchy root: '0::/a/b' (v2) or '4:cpu,cpuacct:/a/b'
    (v1). Inside a container with its own cgroup namespace that is '/', i.e. `root` itself.
    """
    relative = ""
    for line in (read_text(PROC_SELF_CGROUP) or "").splitlines():
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controller in controllers.split(","):  # v2's line has no controller list: "" matches it
            relative = path.strip("/")
            break
    own = root / relative if relative else root
    dirs = [own, *own.parents] if own != root and root in own.parents else [root]
    return [d for d in dirs if d == root or root in d.parents]


def _quota_cpus(quota: float, period: float) -> int:
    return max(1, math.ceil(quota / period))


def _cgroup_v2_cpus() -> int | None:
    """The tightest `cpu.max` quota on the way up from our cgroup, in whole CPUs; None when unlimited."""
    limits = []
    for directory in _own_cgroup_dirs(CGROUP_ROOT, ""):
        quota, _, period = (read_text(directory / "cpu.max") or "").partition(" ")
        if quota and quota != "max" and period:
            try:
                limits.append(_quota_cpus(int(quota), int(period)))
            except ValueError:
                continue
    return min(limits) if limits else None


def _cgroup_v1_cpus() -> int | None:
    """The tightest CFS quota (cpu.cfs_quota_us / cpu.cfs_period_us; -1 is unlimited), in whole CPUs."""
    limits = []
    for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if not (CGROUP_ROOT / mount).is_dir():
            continue
        for directory in _own_cgroup_dirs(CGROUP_ROOT / mount, "cpu"):
            quota = read_int(directory / "cpu.cfs_quota_us")
            period = read_int(directory / "cpu.cfs_period_us")
            if quota is not None and quota > 0 and period:
                limits.append(_quota_cpus(quota, period))
        break  # the others are symlinks to the same hierarchy
    return min(limits) if limits else None


def cgroup_cpu_limit() -> int | None:
    """CPUs the cgroup CPU quota allows (`docker --cpus=N`), rounded up; None when there is no quota."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # a pure v2 hierarchy
        return _cgroup_v2_cpus()
    return _cgroup_v1_cpus()


def usable_cores() -> int:
    """Physical cores this process can really use: the machine's, within its CPU affinity and cgroup quota."""
    affinity = _affinity()
    cores = physical_cores()
    if affinity:
        cores = min(cores, _physical_cores_among(affinity))
    quota = cgroup_cpu_limit()
    return max(1, min(cores, quota) if quota else cores)


def resolve_threads(requested: int) -> int:
    """The thread count to run with: a positive request as is; 0 means every usable core (usable_cores()).

    One thread per physical core is what llama.cpp and torch run best with; beyond the affinity mask or the
    cgroup quota, threads only wait on each other (a `--cpus=4` container on a 64-core host gets 4).
    """
    if requested < 0:
        raise ValueError(f"threads must be 0 (all usable cores) or positive, got {requested}")
    return requested if requested > 0 else usable_cores()


# --------------------------------------------------------------------------------- caches


def _cache_size_bytes(text: str | None) -> int | None:
    # sysfs writes "32768K"; some ARM kernels "1M".
    if not text:
        return None
    unit = _SIZE_UNITS.get(text[-1].upper(), 1)
    digits = text[:-1] if text[-1].upper() in _SIZE_UNITS else text
    return int(digits) * unit if digits.isdigit() else None


def _sysfs_last_level_cache_bytes() -> int | None:
    """Sum over the distinct instances of the highest data-cache level (one L3 per CCD/socket, say)."""
    instances: dict[tuple[int, str], int] = {}  # (level, shared_cpu_list) -> size: each instance once
    for index in CPU_SYSFS.glob("cpu[0-9]*/cache/index[0-9]*"):
        level, size = read_int(index / "level"), _cache_size_bytes(read_text(index / "size"))
        if level is None or size is None or read_text(index / "type") == "Instruction":
            continue
        # Which CPUs share it tells the instances apart; else the cache id; else count it once (the probe's
        # buffer floor covers an underestimate, while counting a shared cache per CPU would overstate it).
        instance = read_text(index / "shared_cpu_list") or read_text(index / "id") or ""
        instances[(level, instance)] = size
    if not instances:
        return None
    top = max(level for level, _ in instances)
    return sum(size for (level, _), size in instances.items() if level == top)


def last_level_cache_bytes() -> int | None:
    """Total last-level cache of the machine (sysfs; else py-cpuinfo's L3 size); None when neither says."""
    found = attempt(_sysfs_last_level_cache_bytes)
    if found:
        return found
    info = (attempt(cpuinfo.get_cpu_info) if cpuinfo is not None else None) or {}
    l3 = info.get("l3_cache_size")
    return l3 if isinstance(l3, int) and l3 > 0 else None

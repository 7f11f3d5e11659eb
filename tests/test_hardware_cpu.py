"""bench.hardware.cpu: threads=0 resolves to the cores this process may use (issue 12 item 4), and the
last-level cache size the bandwidth probe sizes its buffer from. cgroup, procfs and sysfs are fake trees."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.hardware import cpu, resolve_threads

MIB = 2**20


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 32-core, 64-CPU host with no affinity mask, no cgroup quota and no topology in its (fake) sysfs."""
    monkeypatch.setattr(cpu, "physical_cores", lambda: 32)
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(cpu, "CGROUP_ROOT", tmp_path / "cgroup")
    monkeypatch.setattr(cpu, "PROC_SELF_CGROUP", tmp_path / "proc-self-cgroup")
    monkeypatch.setattr(cpu, "CPU_SYSFS", tmp_path / "sys-cpu")
    (tmp_path / "cgroup").mkdir()
    return tmp_path


def cgroup_v2(root: Path, cpu_max: str, group: str = "") -> None:
    write(root / "cgroup" / "cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root / "cgroup" / group / "cpu.max", cpu_max + "\n")


# ------------------------------------------------------------------------------ resolve_threads


def test_positive_request_is_kept(machine: Path) -> None:
    cgroup_v2(machine, "100000 100000")
    assert resolve_threads(7) == 7  # an explicit count is the user's choice, even above the quota
    with pytest.raises(ValueError):
        resolve_threads(-1)


def test_all_physical_cores_when_nothing_limits(machine: Path) -> None:
    assert resolve_threads(0) == 32


def test_missing_files_mean_no_limit(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "CGROUP_ROOT", machine / "nowhere")
    assert cpu.cgroup_cpu_limit() is None
    assert resolve_threads(0) == 32


def test_affinity_limits(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {4, 5, 6}, raising=False)  # taskset -c 4-6
    assert resolve_threads(0) == 3


def test_affinity_counts_smt_siblings_once(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for number, core in enumerate([0, 0, 1, 1]):  # two cores, two hardware threads each
        write(machine / "sys-cpu" / f"cpu{number}" / "topology" / "core_id", f"{core}\n")
        write(machine / "sys-cpu" / f"cpu{number}" / "topology" / "physical_package_id", "0\n")
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert resolve_threads(0) == 2


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        ("200000 100000", 2),  # docker --cpus=2
        ("150000 100000", 2),  # 1.5 CPUs: rounded up, the half core still runs a thread
        ("50000 100000", 1),
        ("max 100000", 32),  # no quota
        ("garbage", 32),
    ],
)
def test_cgroup_v2_quota(machine: Path, cpu_max: str, expected: int) -> None:
    cgroup_v2(machine, cpu_max)
    assert resolve_threads(0) == expected


def test_cgroup_v2_tightest_quota_on_the_way_up(machine: Path) -> None:
    write(machine / "proc-self-cgroup", "0::/outer/inner\n")
    cgroup_v2(machine, "300000 100000", "outer")
    cgroup_v2(machine, "max 100000", "outer/inner")
    assert resolve_threads(0) == 3


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(machine: Path, mount: str) -> None:
    write(machine / "proc-self-cgroup", "4:cpu,cpuacct:/\n1:name=systemd:/\n")
    write(machine / "cgroup" / mount / "cpu.cfs_quota_us", "400000\n")
    write(machine / "cgroup" / mount / "cpu.cfs_period_us", "100000\n")
    assert resolve_threads(0) == 4


def test_cgroup_v1_unlimited(machine: Path) -> None:
    write(machine / "cgroup" / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(machine / "cgroup" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert cpu.cgroup_cpu_limit() is None
    assert resolve_threads(0) == 32


def test_affinity_and_quota_together(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    cgroup_v2(machine, "400000 100000")
    assert resolve_threads(0) == 4
    cgroup_v2(machine, "1600000 100000")
    assert resolve_threads(0) == 8


def test_resolve_threads_on_this_machine() -> None:
    threads = resolve_threads(0)
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nresolve_threads(0) here: {threads} (physical cores {cpu.physical_cores()}, affinity {allowed}, "
        f"cgroup quota {cpu.cgroup_cpu_limit()})"
    )
    assert 1 <= threads <= min(cpu.physical_cores(), allowed or threads)


# ------------------------------------------------------------------------- last-level cache


def cache(root: Path, number: int, index: int, level: int, kind: str, size: str, shared: str) -> None:
    directory = root / f"cpu{number}" / "cache" / f"index{index}"
    for name, value in (("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
        write(directory / name, f"{value}\n")


def test_llc_sums_distinct_instances(machine: Path) -> None:
    root = machine / "sys-cpu"
    for number in range(4):  # two CCDs of two cores, one 32 MiB L3 each
        cache(root, number, 0, 1, "Data", "32K", str(number))
        cache(root, number, 1, 1, "Instruction", "32K", str(number))
        cache(root, number, 2, 2, "Unified", "1024K", str(number))
        cache(root, number, 3, 3, "Unified", "32768K", "0-1" if number < 2 else "2-3")
    assert cpu.last_level_cache_bytes() == 64 * MIB


def test_llc_ignores_instruction_caches(machine: Path) -> None:
    root = machine / "sys-cpu"
    for number in range(2):
        cache(root, number, 0, 1, "Data", "48K", str(number))
        cache(root, number, 1, 2, "Instruction", "2M", str(number))  # an odd top-level I-cache
    assert cpu.last_level_cache_bytes() == 2 * 48 * 2**10


def test_llc_falls_back_to_py_cpuinfo(machine: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu, "cpuinfo", SimpleNamespace(get_cpu_info=lambda: {"l3_cache_size": 8 * MIB}))
    assert cpu.last_level_cache_bytes() == 8 * MIB
    monkeypatch.setattr(cpu, "cpuinfo", None)
    assert cpu.last_level_cache_bytes() is None


def test_llc_on_this_machine() -> None:
    llc = cpu.last_level_cache_bytes()
    print(f"\nlast-level cache here: {None if llc is None else llc / MIB} MiB")
    if Path("/sys/devices/system/cpu/cpu0/cache/index0/level").exists():
        assert llc is not None and llc >= MIB

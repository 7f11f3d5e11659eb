"""A worker's memory limit as a cgroup v2 `memory.max`, where this process's cgroup lets bench set one.

The kernel then enforces the limit on the memory the worker charges (anonymous memory and the file pages it
keeps, reclaiming those first) and counts its OOM kills in `memory.events`, so a worker is called out of
memory only when the kernel says it was. Where cgroup v2 is not usable — cgroup v1 or hybrid hierarchies
whose memory controller is v1, a cgroup not writable by this user, a parent that does not delegate the
memory controller — bench.execute.process falls back to its RSS watchdog, and rows say which one it was.

Layout (cgroup v2's "no internal processes" rule: a cgroup that hands controllers to children holds no
processes itself): under this process's own cgroup P, each worker gets P/bench-<pid>-w<n> with memory.max
(and memory.swap.max 0 where swap is accounted, so the limit is not dodged by swapping). If P still holds
processes, this process first moves itself into a leaf P/bench-<pid> it creates (what systemd asks of a
delegated payload); if others remain in P, memory cannot be delegated and the watchdog is used.

BENCH_CGROUP_ROOT names the cgroup v2 directory to put worker cgroups under, instead of this process's own
(tests point it at a fake tree).
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT_ENV = "BENCH_CGROUP_ROOT"
BY_CGROUP = "cgroup_memory_max"  # the row's memory_limit_enforced_by values
BY_WATCHDOG = "rss_watchdog"
REMOVE_ATTEMPTS = 20  # rmdir fails with EBUSY for a moment after the last process exits
REMOVE_WAIT_S = 0.01

_counter = itertools.count(1)
_delegations: dict[Path | None, Delegation] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Delegation:
    """Where worker cgroups go (None: not possible here), and why not."""

    parent: Path | None
    reason: str = ""


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _write(path: Path, text: str) -> None:
    # One write() per value, as the kernel's cgroup files expect; no truncation games on a pseudo-file.
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def own_cgroup(proc_root: Path = Path("/proc/self")) -> Path | None:
    """This process's cgroup v2 directory: the cgroup2 mount plus the `0::` line of /proc/self/cgroup."""
    try:
        relative = next(
            (line[3:].strip() for line in _read(proc_root / "cgroup").splitlines() if line.startswith("0::")), None
        )
        mounts = [line.split() for line in _read(proc_root / "mountinfo").splitlines()]
    except OSError:
        return None
    for fields in mounts:
        # mountinfo: id parent major:minor root mount-point options ... - fstype source super-options
        if "-" in fields and fields[fields.index("-") + 1] == "cgroup2" and relative is not None:
            # A container may mount only its own subtree (root /docker/<id>) where the cgroup path is the full one.
            mount_root = fields[3].rstrip("/")
            if mount_root and (relative == mount_root or relative.startswith(mount_root + "/")):
                relative = relative[len(mount_root) :]
            return Path(fields[4]) / relative.lstrip("/")
    return None


def _controllers(path: Path) -> set[str]:
    try:
        return set(_read(path).split())
    except OSError:
        return set()


def _processes(directory: Path) -> list[str]:
    try:
        return _read(directory / "cgroup.procs").split()
    except OSError:
        return []


def _delegate(parent: Path) -> Delegation:
    if "memory" not in _controllers(parent / "cgroup.controllers"):
        return Delegation(None, f"the memory controller is not available in {parent} (cgroup v1, or not delegated)")
    if not os.access(parent, os.W_OK) or not os.access(parent / "cgroup.subtree_control", os.W_OK):
        return Delegation(None, f"{parent} is not writable by this user")
    if "memory" in _controllers(parent / "cgroup.subtree_control"):
        return Delegation(parent)
    leaf = parent / f"bench-{os.getpid()}"
    try:
        if str(os.getpid()) in _processes(parent):  # no internal processes: step into a leaf of our own
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(parent / "cgroup.subtree_control", "+memory")
    except OSError as exc:
        _step_back(parent, leaf)
        if exc.errno == errno.EBUSY:
            return Delegation(None, f"other processes share {parent}, so it cannot delegate memory to a child")
        return Delegation(None, f"cannot enable the memory controller under {parent}: {exc.strerror or exc}")
    return Delegation(parent)


def _step_back(parent: Path, leaf: Path) -> None:
    """Undo the move into our leaf when delegation failed anyway: leave the cgroup tree as we found it."""
    if not leaf.is_dir():
        return
    try:
        if str(os.getpid()) in _processes(leaf):
            _write(parent / "cgroup.procs", str(os.getpid()))
        remove_directory(leaf)
    except OSError:
        pass  # still in the leaf: harmless (the parent's limits apply to it all the same)


def delegation(root: Path | None = None) -> Delegation:
    """Whether workers can get their own memory.max here (worked out once per process and directory)."""
    root = root or (Path(os.environ[ROOT_ENV]) if os.environ.get(ROOT_ENV) else None)
    with _lock:
        if root not in _delegations:
            parent = root or own_cgroup()
            _delegations[root] = _delegate(parent) if parent else Delegation(None, "no cgroup v2 hierarchy mounted")
        return _delegations[root]


class WorkerCgroup:
    """One worker's cgroup: created with its limit, given the worker's PID, asked about OOM kills, removed."""

    def __init__(self, path: Path, limit_bytes: int) -> None:
        self.path = path
        self.limit_bytes = limit_bytes
        path.mkdir(exist_ok=True)
        _write(path / "memory.max", str(limit_bytes))
        if (path / "memory.swap.max").exists():  # absent where the kernel does not account swap
            _write(path / "memory.swap.max", "0")

    @classmethod
    def create(cls, parent: Path, limit_bytes: int) -> WorkerCgroup:
        return cls(parent / f"bench-{os.getpid()}-w{next(_counter)}", limit_bytes)

    def add(self, pid: int) -> None:
        _write(self.path / "cgroup.procs", str(pid))

    def events(self) -> dict[str, int]:
        """memory.events as numbers ("low 0", "high 0", "max 3", "oom 1", "oom_kill 1", ...)."""
        try:
            lines = _read(self.path / "memory.events").splitlines()
        except OSError:
            return {}
        pairs = (line.split() for line in lines)
        return {fields[0]: int(fields[1]) for fields in pairs if len(fields) == 2 and fields[1].isdigit()}

    def oom_killed(self) -> bool:
        return self.events().get("oom_kill", 0) > 0

    def peak_bytes(self) -> int | None:
        """memory.peak (Linux 5.19+), else None."""
        try:
            return int(_read(self.path / "memory.peak").strip())
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        """Remove the cgroup once its processes are gone; a cgroup that will not go is left, not fatal."""
        for _ in range(REMOVE_ATTEMPTS):
            try:
                remove_directory(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(REMOVE_WAIT_S)


def remove_directory(path: Path) -> None:
    """rmdir: the kernel removes a cgroup's interface files with it (a fake tree in tests replaces this)."""
    os.rmdir(path)

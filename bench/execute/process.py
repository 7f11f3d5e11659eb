"""One worker process: spawned without a shell in its own process group, read with deadlines, killed as a group.

Every job (measurement or quality) goes through this one spawn path. A Ctrl-C at the terminal reaches only
the parent, which then kills the worker's whole process group. The worker stays in bench's session: Linux
schedules each session as one group (autogroup), so a worker in a session of its own would get one
session's share of the CPU against every busy session, and ggml's OpenMP threads, spinning at their
barriers while the thread they wait for is descheduled, turn that into a 10-100x slowdown that llama-bench,
started from the user's shell, does not see (README: "Measuring on a busy machine").

A memory limit is the worker's cgroup v2 memory.max where this process may set one (bench.execute.cgroup),
else a watchdog thread that reads the worker tree's resident memory and kills it past the limit: resident
memory either way, not address space, because mmap'd model files and CUDA's reservations are address space
that takes no RAM.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import psutil

from bench.execute.cgroup import BY_CGROUP, BY_WATCHDOG, WorkerCgroup, delegation
from bench.execute.protocol import decode_event, encode

STDERR_TAIL_BYTES = 8192
WATCH_INTERVAL_S = 0.05
SIGNAL_EXPLANATIONS = {
    signal.SIGILL: "illegal instruction: this llama.cpp build uses CPU instructions this machine rejects "
    "(e.g. AMX advertised by a VM); rebuild with scripts/install.sh (flags from this CPU) "
    "or set knobs.repack: false",
    signal.SIGSEGV: "segmentation fault in the native backend",
    signal.SIGABRT: "aborted (ggml_abort / failed assertion in the native backend)",
    signal.SIGKILL: "killed by SIGKILL (the kernel OOM killer, or an external kill)",
    signal.SIGBUS: "bus error (model file changed or truncated while mapped?)",
    signal.SIGFPE: "arithmetic exception in the native backend",
}
# With a cgroup, memory.events says whether the kernel's OOM killer (any kind: the cgroup's or the system's) killed
# the worker: a SIGKILL it did not count came from elsewhere.
NOT_OOM_SIGKILL = "killed by SIGKILL, not by the OOM killer (its cgroup's memory.events counts none): an external kill"
_INTERESTING = ("error", "assert", "abort", "failed", "exception", "fatal", "illegal", "out of memory")

# Every worker alive in this process, by the thread that started it: a fleet host stopping a run kills the
# workers of that run's task thread (kill_workers), which it cannot reach through the call stack.
_LIVE: dict[int, set[WorkerProcess]] = {}
_LIVE_LOCK = threading.Lock()


class Interrupted(Exception):
    """The user pressed Ctrl-C: stop after what was measured is written."""


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def describe_exit(returncode: int, stderr_tail: str, oom_known_absent: bool = False) -> str:
    """A readable reason for a worker's death (oom_known_absent: the kernel says it killed nothing for memory)."""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        explanation = SIGNAL_EXPLANATIONS.get(sig, "terminated by a signal")
        if sig == signal.SIGKILL and oom_known_absent:
            explanation = NOT_OOM_SIGKILL
        text = f"worker died by {sig.name}: {explanation}"
    else:
        text = f"worker exited with code {returncode}"
    detail = _last_interesting_line(stderr_tail)
    return f"{text}; last output: {detail}" if detail else text


def _last_interesting_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line.lower() for word in _INTERESTING):
            return line[:300]
    return lines[-1][:300] if lines else ""


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its children (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total


class WorkerProcess:
    """`python -m bench.execute.worker` running one job; events arrive on a queue as they are written."""

    def __init__(self, job: Any, memory_limit_bytes: int | None = None, cgroup_root: Path | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.memory_limit_bytes = memory_limit_bytes
        self.out_of_memory_rss: int | None = None  # set when the watchdog killed the worker
        self.cgroup: WorkerCgroup | None = None
        self.memory_limit_by = ""  # BY_CGROUP | BY_WATCHDOG with a limit: the row's memory_limit_enforced_by
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "bench.execute.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            process_group=0,  # killable as a group, but scheduled with bench's session, as llama-bench is
            text=True,
            encoding="utf-8",
        )
        self.owner_thread = threading.get_ident()
        with _LIVE_LOCK:
            _LIVE.setdefault(self.owner_thread, set()).add(self)
        self.events: queue.Queue[Any] = queue.Queue()
        self._done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if memory_limit_bytes:
            self._limit_memory(memory_limit_bytes, cgroup_root)
        # The job goes last: the worker loads its model only once it has read the job, so that memory is
        # charged to the worker's cgroup (only the interpreter's start-up is charged where bench runs).
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(encode(job))
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at once; its exit status tells why

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = decode_event(line)
            if event is not None:
                self.events.put(event)
        self.events.put(None)
        self._done.set()

    def _limit_memory(self, limit_bytes: int, cgroup_root: Path | None) -> None:
        parent = delegation(cgroup_root).parent
        if parent is not None:
            try:
                self.cgroup = WorkerCgroup.create(parent, limit_bytes)
                self.cgroup.add(self.process.pid)
                self.memory_limit_by = BY_CGROUP
                return
            except OSError:  # e.g. a cgroup count limit: the watchdog still holds the worker to its limit
                self._remove_cgroup()
        self.memory_limit_by = BY_WATCHDOG
        threading.Thread(target=self._watch_memory, daemon=True).start()

    def _remove_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def _watch_memory(self) -> None:
        limit = self.memory_limit_bytes or 0
        while not self._done.wait(WATCH_INTERVAL_S):
            rss = tree_rss_bytes(self.process.pid)
            if rss > limit:
                self.out_of_memory_rss = rss
                self.kill()
                return

    def next_event(self, timeout_s: float) -> Any:
        """The next event; None when the worker ended. Raises TimeoutError past the deadline."""
        try:
            return self.events.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            raise TimeoutError from None

    def stderr_tail(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        return self.stderr.read().decode("utf-8", errors="replace")

    def exit_reason(self) -> str:
        """Why the worker ended without finishing its job."""
        returncode = self.finish()
        if self.out_of_memory_rss is not None and self.memory_limit_bytes:
            return (
                f"out of memory: the worker's resident memory reached {gib(self.out_of_memory_rss)}, over "
                f"limits.memory_limit_gb ({gib(self.memory_limit_bytes)})"
            )
        if self.cgroup is not None and self.cgroup.oom_killed():  # the kernel's word, not a guess from a signal
            peak = self.cgroup.peak_bytes()
            return (
                f"out of memory: the kernel killed the worker at its cgroup's memory.max "
                f"({gib(self.cgroup.limit_bytes)}, limits.memory_limit_gb)"
                + (f"; its memory peaked at {gib(peak)}" if peak else "")
            )
        return describe_exit(returncode, self.stderr_tail(), oom_known_absent=self.cgroup is not None)

    def kill(self) -> None:
        """Kill the whole process group and reap it: no zombies, no orphans."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def finish(self) -> int:
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self._remove_cgroup()
        self._done.set()
        self.stderr.close()
        with _LIVE_LOCK:
            owned = _LIVE.get(self.owner_thread, set())
            owned.discard(self)
            if not owned:
                _LIVE.pop(self.owner_thread, None)


def kill_workers(owner_thread: int | None = None) -> int:
    """Kill the live workers started by `owner_thread` (every thread's when None); how many were alive."""
    with _LIVE_LOCK:
        chosen = [w for thread, owned in _LIVE.items() if owner_thread in (None, thread) for w in owned]
    for worker in chosen:
        worker.kill()
    return len(chosen)

"""One worker process: spawned without a shell in its own session, read with deadlines, killed as a group.

Every job (measurement or quality) goes through this one spawn path. A Ctrl-C at the terminal reaches only
the parent, which then kills the worker's whole process group. With a memory limit, a watchdog thread reads
the worker tree's resident memory and kills it past the limit: resident memory, not address space, because
mmap'd model files and CUDA's reservations are address space that takes no RAM.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import psutil

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
_INTERESTING = ("error", "assert", "abort", "failed", "exception", "fatal", "illegal", "out of memory")

# Every worker alive in this process, by the thread that started it: a fleet host stopping a run kills the
# workers of that run's task thread (kill_workers), which it cannot reach through the call stack.
_LIVE: dict[int, set[WorkerProcess]] = {}
_LIVE_LOCK = threading.Lock()


class Interrupted(Exception):
    """The user pressed Ctrl-C: stop after what was measured is written."""


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def describe_exit(returncode: int, stderr_tail: str) -> str:
    """A readable reason for a worker's death."""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        text = f"worker died by {sig.name}: {SIGNAL_EXPLANATIONS.get(sig, 'terminated by a signal')}"
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

    def __init__(self, job: Any, memory_limit_bytes: int | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()
        self.memory_limit_bytes = memory_limit_bytes
        self.out_of_memory_rss: int | None = None  # set when the watchdog killed the worker
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "bench.execute.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            start_new_session=True,
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
            threading.Thread(target=self._watch_memory, daemon=True).start()
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
        return describe_exit(returncode, self.stderr_tail())

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

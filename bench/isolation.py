"""Worker processes with time limits; signals, timeouts and OOM become row statuses.

The parent never loads a model. It starts `python -m bench.worker` (no shell) in its own
session, so a Ctrl-C at the terminal reaches only the parent, which then kills the
worker's whole process group. Every event is read with a deadline.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.suite import Cell

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
STDERR_TAIL_BYTES = 8192
_INTERESTING = ("error", "assert", "abort", "failed", "exception", "fatal", "illegal", "out of memory")


@dataclass
class CellOutcome:
    cell: Cell
    status: str  # ok | failed | timeout
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkGroup:
    """Cells that share one loaded model."""

    backend: str
    model_path: Path
    cells: list[Cell]
    memory_limit_bytes: int | None = None
    load_timeout_s: float = 600.0
    cell_timeout_s: float = 900.0


class Interrupted(Exception):
    """The user pressed Ctrl-C: stop after what was measured is written."""


def describe_exit(returncode: int, stderr_tail: str, memory_limit_bytes: int | None) -> str:
    """A readable reason for a worker's death."""
    if returncode < 0:
        sig = signal.Signals(-returncode)
        text = f"worker died by {sig.name}: {SIGNAL_EXPLANATIONS.get(sig, 'terminated by a signal')}"
    else:
        text = f"worker exited with code {returncode}"
    oom_words = ("bad_alloc", "failed to allocate", "cannot allocate memory", "out of memory", "memoryerror")
    if memory_limit_bytes and any(w in stderr_tail.lower() for w in oom_words):
        text = f"out of memory (limit {memory_limit_bytes / 2**30:.2f} GiB); {text}"
    detail = _last_interesting_line(stderr_tail)
    return f"{text}; last output: {detail}" if detail else text


def _last_interesting_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(word in line.lower() for word in _INTERESTING):
            return line[:300]
    return lines[-1][:300] if lines else ""


class _Worker:
    def __init__(self, group: WorkGroup, cells: list[Cell]) -> None:
        self.stderr = tempfile.TemporaryFile()
        job = {
            "backend": group.backend,
            "model_path": str(group.model_path),
            "cells": [c.model_dump() for c in cells],
            "memory_limit_bytes": group.memory_limit_bytes,
        }
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            start_new_session=True, text=True, encoding="utf-8",
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(job))
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # the worker died at once; its exit status tells why

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.events.put(None)

    def next_event(self, timeout_s: float) -> dict[str, Any] | None:
        """The next event; None when the worker ended. Raises TimeoutError past the deadline."""
        try:
            return self.events.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError from None

    def stderr_tail(self) -> str:
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - STDERR_TAIL_BYTES))
        return self.stderr.read().decode("utf-8", errors="replace")

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
        self.stderr.close()


def run_group(group: WorkGroup, on_outcome: Callable[[CellOutcome], None],
              on_start: Callable[[Cell], None] | None = None) -> None:
    """Measure every cell of the group, restarting the worker after a crash or timeout.

    Each cell yields exactly one outcome. A crash while loading fails every remaining cell
    (loading again would crash again); a crash inside a cell fails that cell only.
    """
    remaining = list(group.cells)
    while remaining:
        remaining = _run_worker(group, remaining, on_outcome, on_start)


def _run_worker(group: WorkGroup, cells: list[Cell], on_outcome: Callable[[CellOutcome], None],
                on_start: Callable[[Cell], None] | None) -> list[Cell]:
    by_id = {c.cell_id: c for c in cells}
    pending = list(cells)
    worker = _Worker(group, cells)
    current: Cell | None = None
    load_info: dict[str, Any] = {}
    deadline_s = group.load_timeout_s
    started = time.monotonic()
    try:
        while True:
            try:
                event = worker.next_event(max(0.0, deadline_s - (time.monotonic() - started)))
            except TimeoutError:
                worker.kill()
                if current is None:
                    _fail_all(pending, "timeout", f"model load exceeded {group.load_timeout_s:.0f} s", on_outcome)
                    return []
                on_outcome(CellOutcome(current, "timeout", f"cell exceeded its limit of {group.cell_timeout_s:.0f} s",
                                       dict(load_info)))
                pending.remove(current)
                return pending
            if event is None:
                returncode = worker.finish()
                if not pending:
                    return []
                reason = describe_exit(returncode, worker.stderr_tail(), group.memory_limit_bytes)
                if current is None:
                    _fail_all(pending, "failed", f"while loading the model: {reason}", on_outcome)
                    return []
                on_outcome(CellOutcome(current, "failed", reason, dict(load_info)))
                pending.remove(current)
                return pending
            kind = event["event"]
            if kind == "loaded":
                load_info = {"load_s": event["load_s"], "n_params": event["n_params"],
                             "model_file_bytes": event["model_file_bytes"], **event.get("extra", {})}
            elif kind == "load_error":
                _fail_all(pending, "failed", event["reason"], on_outcome)
                worker.kill()
                return []
            elif kind == "cell_start":
                current = by_id[event["cell_id"]]
                if on_start:
                    on_start(current)
                started, deadline_s = time.monotonic(), group.cell_timeout_s
                load_info["started_utc"] = event["started_utc"]
            elif kind in ("cell_done", "cell_error"):
                cell = by_id[event["cell_id"]]
                fields = {**load_info, "finished_utc": event.get("finished_utc", "")}
                if kind == "cell_done":
                    on_outcome(CellOutcome(cell, "ok", "", {**fields, **event["fields"]}))
                else:
                    on_outcome(CellOutcome(cell, "failed", event["reason"], fields))
                pending.remove(cell)
                current = None
                started, deadline_s = time.monotonic(), group.cell_timeout_s
    except KeyboardInterrupt:
        worker.kill()
        raise Interrupted from None
    finally:
        worker.close()


def _fail_all(cells: list[Cell], status: str, reason: str, on_outcome: Callable[[CellOutcome], None]) -> None:
    for cell in list(cells):
        on_outcome(CellOutcome(cell, status, reason))

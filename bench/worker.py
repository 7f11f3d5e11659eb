"""Worker process: loads one model, measures a group of cells, reports JSON lines.

Started by bench.isolation with no shell (`python -m bench.worker`); the job arrives on
stdin as JSON. Events go to a private copy of the original stdout, while fd 1 is pointed
at stderr so that anything a native library prints cannot corrupt the protocol.
The parent only aggregates: if this process dies, the parent still knows which cell it
was measuring from the last `cell_start` event.
"""
from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from bench.errors import BenchError
from bench.suite import Cell

FAULT_ENV = "BENCH_FAULT"  # test-only fault injection: "<action>@<field>=<value>" or "<action>@load", ';'-separated


def _emit(stream: TextIO, event: str, **payload: Any) -> None:
    stream.write(json.dumps({"event": event, **payload}, default=str) + "\n")
    stream.flush()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reset_peak_rss() -> None:
    """Linux lets a process reset its high-water mark, so each cell gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # not Linux: the peak then covers the worker's life so far


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _apply_memory_limit(limit_bytes: int | None) -> None:
    if limit_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _fault_action(where: str, cell: Cell | None) -> str | None:
    """The action of the first BENCH_FAULT spec (';'-separated) that targets this point, if any."""
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(";")):
        action, _, target = spec.partition("@")
        if target == "load":
            if where == "load":
                return action
        elif cell is not None and where == "cell":
            field, _, value = target.partition("=")
            if str(cell.axis_value(field)) == value:
                return action
    return None


def maybe_inject_fault(where: str, cell: Cell | None) -> None:
    """Make this worker fail on purpose (tests of isolation). Inactive unless BENCH_FAULT is set."""
    action = _fault_action(where, cell)
    if action is None:
        return
    if action.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, action))
        time.sleep(5)  # a signal that is blocked or handled must not look like success
    elif action == "hang":
        while True:
            time.sleep(1)
    elif action == "oom":
        import numpy as np

        hoard = []
        while True:  # untouched allocations grow the address space fast, until the limit raises MemoryError
            hoard.append(np.empty(256 * 2**20, dtype=np.uint8))
    elif action == "raise":
        raise RuntimeError("injected failure")


def _reason(exc: BaseException, limit_bytes: int | None) -> str:
    if isinstance(exc, MemoryError) or (limit_bytes and "memory" in str(exc).lower()):
        limit = f" (limit {limit_bytes / 2**30:.2f} GiB)" if limit_bytes else ""
        return f"out of memory{limit}"
    if isinstance(exc, BenchError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def run_job(job: dict[str, Any], events: TextIO) -> None:
    from bench.hardware import GpuSampler
    from bench.runners import create_runner
    from bench.runners.base import measure_cell, repetition_fields

    limit = job.get("memory_limit_bytes")
    _apply_memory_limit(limit)
    cells = [Cell.model_validate(c) for c in job["cells"]]
    try:
        maybe_inject_fault("load", None)
        runner = create_runner(job["backend"], Path(job["model_path"]), cells[0])
        info = runner.load()
    except (Exception, MemoryError) as exc:
        _emit(events, "load_error", reason=_reason(exc, limit), detail=traceback.format_exc(limit=-3))
        return
    _emit(events, "loaded", load_s=info.load_s, n_params=info.n_params, model_file_bytes=info.model_file_bytes,
          extra=info.extra)
    for cell in cells:
        _emit(events, "cell_start", cell_id=cell.cell_id, started_utc=_now())
        reset_peak_rss()
        try:
            maybe_inject_fault("cell", cell)
            fields = dict(runner.start_context(cell))
            with GpuSampler(cell.device_kind, cell.device_index) as sampler:
                warmups, measured = measure_cell(runner, cell, energy=sampler)
            fields["avg_power_w"] = sampler.avg_power_w
            fields["peak_vram_bytes"] = sampler.peak_vram_bytes
            fields.update(repetition_fields(cell, warmups, measured))
            backend_memory = {k: v for k, v in runner.memory_fields().items() if v is not None}
            if fields["peak_vram_bytes"] is not None and "peak_vram_bytes" in backend_memory:
                # NVML's per-process figure includes the CUDA context an allocator's own peak leaves out.
                backend_memory["peak_vram_bytes"] = max(fields["peak_vram_bytes"],
                                                        backend_memory["peak_vram_bytes"])
            fields.update(backend_memory)
            fields["peak_rss_bytes"] = peak_rss_bytes()
            fields.pop("compute_buffer_bytes", None)
            _emit(events, "cell_done", cell_id=cell.cell_id, finished_utc=_now(), fields=fields)
        except (Exception, MemoryError) as exc:
            _emit(events, "cell_error", cell_id=cell.cell_id, reason=_reason(exc, limit),
                  detail=traceback.format_exc(limit=-3))
    runner.close()


def run_quality_job(job: dict[str, Any], events: TextIO) -> None:
    """Quality of one model x quantization x backend (bench.quality): load, measure, one event."""
    from bench.quality import QualityJob, measure_quality
    from bench.runners import create_runner

    limit = job.get("memory_limit_bytes")
    _apply_memory_limit(limit)
    cell = Cell.model_validate(job["cell"])
    runner = None
    try:
        maybe_inject_fault("load", None)
        runner = create_runner(job["backend"], Path(job["model_path"]), cell)
        runner.load()
        fields = measure_quality(runner, cell, QualityJob.model_validate(job["quality"]))
        _emit(events, "quality_done", fields=fields)
    except (Exception, MemoryError) as exc:
        _emit(events, "quality_error", reason=_reason(exc, limit), detail=traceback.format_exc(limit=-3))
    finally:
        if runner is not None:
            runner.close()


def die_with_parent() -> None:
    """Linux: get SIGKILL when the parent dies (even by SIGKILL), so no worker outlives its run."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent already died before prctl took effect
        os._exit(1)


def main() -> int:
    die_with_parent()
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # stray prints from native code go to stderr, not into the event stream
    sys.stdout = sys.stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when a worker stops
    job = json.loads(sys.stdin.read())
    if job.get("kind") == "quality":  # one model x quantization x backend: bench.quality
        run_quality_job(job, events)
    else:
        run_job(job, events)
    return 0


if __name__ == "__main__":
    sys.exit(main())

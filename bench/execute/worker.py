"""The worker process: loads one model, runs one job (measure cells, or quality), reports typed events.

Started by bench.execute.process with no shell (`python -m bench.execute.worker`); the job arrives on stdin.
Events go to a private copy of the original stdout, while fd 1 points at stderr so that anything a native
library prints cannot corrupt the protocol. The parent only aggregates: if this process dies, the parent
still knows which cell it was measuring from the last `cell_start` event.

BENCH_WORKER_HOOK=module:function names a function called as hook(where, cell) at "load" and at each
"cell": the test suite injects faults (crashes, hangs, memory growth) through it. Production sets none.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from bench.errors import BenchError
from bench.execute.protocol import (
    JOB,
    CellDone,
    CellError,
    CellStart,
    Loaded,
    LoadError,
    MeasureJob,
    QualityDone,
    QualityError,
    QualityJob,
    encode,
)
from bench.execute.rss import peak_rss_bytes, reset_peak_rss, rss_bytes
from bench.suite import Cell

HOOK_ENV = "BENCH_WORKER_HOOK"
Hook = Callable[[str, Cell | None], None]


def _emit(stream: TextIO, message: BaseModel) -> None:
    stream.write(encode(message))
    stream.flush()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _load_hook() -> Hook:
    spec = os.environ.get(HOOK_ENV, "")
    if not spec:
        return lambda where, cell: None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "out of memory: an allocation failed in the worker (MemoryError)"
    if isinstance(exc, BenchError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"


def _detail() -> str:
    return traceback.format_exc(limit=-3)


def run_measure(job: MeasureJob, events: TextIO, hook: Hook) -> None:
    from bench.hardware import GpuSampler, vram_used_bytes
    from bench.hardware.background import background_cpu_pct, machine_cpus, snapshot
    from bench.runners.base import measure_fields
    from bench.runners.registry import create_engine

    cells = [Cell.model_validate(c) for c in job.cells]
    # Device memory used before the model exists: where NVML cannot attribute memory to this process
    # (PID namespaces in containers), peak VRAM is the peak used minus this, weights and KV included.
    vram_before_load = vram_used_bytes(cells[0].device_kind, cells[0].device_index)
    try:
        hook("load", None)
        engine = create_engine(job.backend, Path(job.model_path), cells[0])
        # Taken once the engine exists, so its library (llama_cpp: ~8 MiB resident) counts as the worker's
        # runtime, like the interpreter, and not as the model's memory the planner estimates.
        rss_before_load = rss_bytes()
        info = engine.load()
    except (Exception, MemoryError) as exc:
        _emit(events, LoadError(reason=_reason(exc), detail=_detail()))
        return
    _emit(
        events,
        Loaded(
            load_s=info.load_s,
            fields={
                "n_params": info.n_params,
                "model_file_bytes": info.model_file_bytes,
                "rss_before_load_bytes": rss_before_load,
                **info.extra,
            },
        ),
    )
    for cell in cells:
        _emit(events, CellStart(cell_id=cell.cell_id, started_utc=_now()))
        try:
            hook("cell", cell)
            fields: dict[str, Any] = dict(engine.start_context(cell))
            # The peak starts once the cell's context replaced the previous cell's: reset before, it would
            # carry the previous context (a 4-sequence cell's KV in the next 1-sequence cell's peak).
            reset_peak_rss()
            before = snapshot()
            with GpuSampler(cell.device_kind, cell.device_index, baseline_used_bytes=vram_before_load) as sampler:
                speed = measure_fields(engine, cell, energy=sampler)
            fields["background_cpu_pct"] = background_cpu_pct(before, snapshot(), machine_cpus())
            fields["avg_power_w"] = sampler.avg_power_w
            fields["peak_vram_bytes"] = sampler.peak_vram_bytes
            fields.update(speed)
            backend_memory = {k: v for k, v in engine.memory_fields().items() if v is not None}
            if fields["peak_vram_bytes"] is not None and "peak_vram_bytes" in backend_memory:
                # NVML's per-process figure includes the CUDA context an allocator's own peak leaves out.
                backend_memory["peak_vram_bytes"] = max(fields["peak_vram_bytes"], backend_memory["peak_vram_bytes"])
            fields.update(backend_memory)
            peak = peak_rss_bytes()
            fields["peak_rss_bytes"] = peak
            # Comparable with the planner's estimate: what loading, the context and the batches added.
            fields["model_rss_bytes"] = peak - rss_before_load
            _emit(events, CellDone(cell_id=cell.cell_id, finished_utc=_now(), fields=fields))
        except (Exception, MemoryError) as exc:
            _emit(events, CellError(cell_id=cell.cell_id, reason=_reason(exc), detail=_detail()))
    engine.close()


def run_quality(job: QualityJob, events: TextIO, hook: Hook) -> None:
    """Quality of one cell's settings (bench.quality): load, measure, one event."""
    from bench.quality import QualityJob as QualitySettings
    from bench.quality import measure_quality
    from bench.runners.registry import create_engine

    cell = Cell.model_validate(job.cell)
    engine = None
    try:
        hook("load", None)
        engine = create_engine(job.backend, Path(job.model_path), cell)
        engine.load()
        fields = measure_quality(engine, cell, QualitySettings.model_validate(job.quality))
        _emit(events, QualityDone(fields=fields))
    except (Exception, MemoryError) as exc:
        _emit(events, QualityError(reason=_reason(exc), detail=_detail()))
    finally:
        if engine is not None:
            engine.close()


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
    job = JOB.validate_json(sys.stdin.read())
    hook = _load_hook()
    if isinstance(job, QualityJob):
        run_quality(job, events, hook)
    else:
        run_measure(job, events, hook)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Jobs on this machine: worker processes with time limits; signals, timeouts and memory become row statuses."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.execute.process import Interrupted, WorkerProcess
from bench.execute.protocol import (
    CellDone,
    CellError,
    CellStart,
    Loaded,
    LoadError,
    MeasureJob,
    QualityDone,
    QualityError,
    QualityJob,
)
from bench.results import Status
from bench.suite import Cell


@dataclass
class CellOutcome:
    cell: Cell
    status: Status  # never skipped: a worker that ran the cell says ok, failed or timeout
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


def run_group(
    group: WorkGroup, on_outcome: Callable[[CellOutcome], None], on_start: Callable[[Cell], None] | None = None
) -> None:
    """Measure every cell of the group, restarting the worker after a crash or timeout.

    Each cell yields exactly one outcome. A crash while loading fails every remaining cell (loading again
    would crash again); a crash inside a cell fails that cell only.
    """
    remaining = list(group.cells)
    while remaining:
        remaining = _run_worker(group, remaining, on_outcome, on_start)


def _run_worker(
    group: WorkGroup,
    cells: list[Cell],
    on_outcome: Callable[[CellOutcome], None],
    on_start: Callable[[Cell], None] | None,
) -> list[Cell]:
    by_id = {c.cell_id: c for c in cells}
    pending = list(cells)
    job = MeasureJob(backend=group.backend, model_path=str(group.model_path), cells=[c.fields() for c in cells])
    worker = WorkerProcess(job, group.memory_limit_bytes)
    current: Cell | None = None
    # How the memory limit was enforced (cgroup or watchdog; blank without a limit): on every row, failed too.
    enforced = {"memory_limit_enforced_by": worker.memory_limit_by}
    load_fields: dict[str, Any] = dict(enforced)
    deadline_s = group.load_timeout_s
    started = time.monotonic()
    try:
        while True:
            try:
                event = worker.next_event(deadline_s - (time.monotonic() - started))
            except TimeoutError:
                worker.kill()
                if current is None:
                    _fail_all(
                        pending, "timeout", f"model load exceeded {group.load_timeout_s:.0f} s", on_outcome, enforced
                    )
                    return []
                on_outcome(
                    CellOutcome(
                        current,
                        "timeout",
                        f"cell exceeded its limit of {group.cell_timeout_s:.0f} s",
                        dict(load_fields),
                    )
                )
                pending.remove(current)
                return pending
            if event is None:
                if not pending:
                    worker.finish()
                    return []
                reason = worker.exit_reason()
                if current is None:
                    _fail_all(pending, "failed", f"while loading the model: {reason}", on_outcome, enforced)
                    return []
                on_outcome(CellOutcome(current, "failed", reason, dict(load_fields)))
                pending.remove(current)
                return pending
            if isinstance(event, Loaded):
                load_fields = {**enforced, "load_s": event.load_s, **event.fields}
            elif isinstance(event, LoadError):
                _fail_all(pending, "failed", event.reason, on_outcome, enforced)
                worker.kill()
                return []
            elif isinstance(event, CellStart):
                current = by_id[event.cell_id]
                if on_start:
                    on_start(current)
                started, deadline_s = time.monotonic(), group.cell_timeout_s
                load_fields["started_utc"] = event.started_utc
            elif isinstance(event, CellDone | CellError):
                cell = by_id[event.cell_id]
                fields = {**load_fields, "finished_utc": getattr(event, "finished_utc", "")}
                if isinstance(event, CellDone):
                    on_outcome(CellOutcome(cell, "ok", "", {**fields, **event.fields}))
                else:
                    on_outcome(CellOutcome(cell, "failed", event.reason, fields))
                pending.remove(cell)
                current = None
                started, deadline_s = time.monotonic(), group.cell_timeout_s
    except KeyboardInterrupt:
        worker.kill()
        raise Interrupted from None
    finally:
        worker.close()


def _fail_all(
    cells: list[Cell],
    status: str,
    reason: str,
    on_outcome: Callable[[CellOutcome], None],
    fields: dict[str, Any] | None = None,
) -> None:
    for cell in list(cells):
        on_outcome(CellOutcome(cell, status, reason, dict(fields or {})))


@dataclass
class JobOutcome:
    """What a quality job gave: its row fields, or why there are none."""

    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_quality_job(
    backend: str,
    model_path: Path,
    cell: Cell,
    quality: dict[str, Any],
    timeout_s: float,
    memory_limit_bytes: int | None = None,
) -> JobOutcome:
    """Measure quality in a worker, like speed cells: a crash, hang or OOM becomes an error, not a dead run."""
    job = QualityJob(backend=backend, model_path=str(model_path), cell=cell.fields(), quality=quality)
    worker = WorkerProcess(job, memory_limit_bytes)
    started = time.monotonic()
    try:
        while True:
            try:
                event = worker.next_event(timeout_s - (time.monotonic() - started))
            except TimeoutError:
                worker.kill()
                return JobOutcome(error=f"quality measurement exceeded its limit of {timeout_s:.0f} s")
            if event is None:
                return JobOutcome(error=worker.exit_reason())
            if isinstance(event, QualityDone):
                return JobOutcome(fields=event.fields)
            if isinstance(event, QualityError | LoadError):
                return JobOutcome(error=event.reason)
    except KeyboardInterrupt:
        worker.kill()
        raise Interrupted from None
    finally:
        worker.close()

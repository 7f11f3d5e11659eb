"""Every cell of a plan, one entry each: aligned text lines (`bench plan --cells`), JSON and CSV for scripts.

The text is plain aligned columns rather than a rich table: a table of ten thousand rows takes seconds to lay
out, and a line per cell is what grep and a pager want.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

from bench.plan.planned import PlannedCell
from bench.plan.time_estimate import CellTime
from bench.plan.view import duration_text, tokens_text
from bench.runners.base import context_size
from bench.suite import KNOBS, Cell
from bench.suite.knobs import config_name

PLAN_COLUMNS = (
    "status",
    "reason",
    "weights",
    "weights_shape",
    "weights_note",
    "est_weights_bytes",
    "est_kv_bytes",
    "est_compute_bytes",
    "est_total_bytes",
    "est_device_free_bytes",
    "memory_where",
    "memory_note",
    "est_seconds",
    "time_basis",
)


def varying_knobs(cells: Sequence[Cell]) -> list[str]:
    """The knobs whose value differs between cells (what tells two cells of one model and device apart)."""
    return [name for name in KNOBS if len({cell.knob(name) for cell in cells}) > 1]


def records(planned: Sequence[PlannedCell], times: Mapping[str, CellTime]) -> list[dict[str, Any]]:
    """One flat record per cell: its fields (as a result row names them), status, memory and time estimates."""
    out = []
    for item in planned:
        cell, memory = item.cell, item.memory
        time = times.get(item.cell_id)
        record: dict[str, Any] = {"cell_id": item.cell_id, **cell.fields()}
        record.update(dict.fromkeys(PLAN_COLUMNS))
        record.update(status=item.status, reason=item.skip_reason)
        if item.weights is not None:
            record.update(item.weights.row_fields(), weights_note=item.weights.describe() or None)
        if memory is not None:
            record.update(memory.row_fields())
            record["memory_where"] = memory.estimate.where if memory.estimate else None
            record["memory_note"] = memory.note or memory.fetch or None
        if time is not None:
            record.update(est_seconds=round(time.seconds, 3), time_basis=time.basis)
        out.append(record)
    return out


def to_json(planned: Sequence[PlannedCell], times: Mapping[str, CellTime], summary: Mapping[str, Any]) -> str:
    """{"summary": {...}, "cells": [one object per cell]}."""
    # No indent: json's C encoder serves compact output only (indented, 10,000 cells take seconds).
    return json.dumps({"summary": dict(summary), "cells": records(planned, times)}, default=str)


def to_csv(planned: Sequence[PlannedCell], times: Mapping[str, CellTime]) -> str:
    """A header and one line per cell."""
    rows = records(planned, times)
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _memory_text(item: PlannedCell) -> str:
    memory = item.memory
    if memory is None or memory.estimate is None:
        return "?"
    return f"{memory.estimate.total_bytes / 2**30:.2f} GiB {memory.estimate.where}"


def _time_text(item: PlannedCell, time: CellTime | None) -> str:
    if not item.runnable:
        return "-"
    return duration_text(time.seconds) if time is not None else "?"


def cell_lines(planned: Sequence[PlannedCell], times: Mapping[str, CellTime], force: bool = False) -> list[str]:
    """A header and one aligned line per cell, its skip reason (or note) at the end of its line."""
    varying = varying_knobs([p.cell for p in planned])
    header = (
        "cell_id",
        "model",
        "quant",
        "backend",
        "device",
        "config",
        "pp",
        "tg",
        "depth",
        "ctx",
        "memory (est.)",
        "time (est.)",
        "status",
    )
    rows = []
    for item in planned:
        cell, time = item.cell, times.get(item.cell_id)
        status = item.status
        note = item.skip_reason
        if item.runnable and item.memory is not None:
            problem = item.memory.problem if force else ""
            status = "run (forced)" if problem else status
            note = f"will not fit: {problem}" if problem else (item.memory.note or item.memory.fetch)
        if item.runnable and item.weights is not None and item.weights.synthetic:
            note = item.weights.describe() + (f"; {item.memory.note}" if item.memory and item.memory.note else "")
        rows.append(
            (
                (
                    item.cell_id,
                    cell.model_id,
                    cell.quantization,
                    cell.backend,
                    cell.device_id,
                    config_name(cell.knobs(), varying) or "-",
                    str(cell.prompt_tokens),
                    str(cell.gen_tokens),
                    str(cell.depth),
                    tokens_text(context_size(cell)),
                    _memory_text(item),
                    _time_text(item, time),
                    status,
                ),
                note,
            )
        )
    widths = [max([len(header[i]), *(len(row[i]) for row, _ in rows)]) for i in range(len(header))]
    numeric = {"pp", "tg", "depth", "ctx", "time (est.)"}

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            value.rjust(width) if name in numeric else value.ljust(width)
            for name, value, width in zip(header, values, widths, strict=True)
        ).rstrip()

    return [line(header), *(line(values) + (f"  {note}" if note else "") for values, note in rows)]

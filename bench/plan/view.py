"""What `bench plan` shows by default, as rich renderables (bench/cli prints them): a summary per model ×
quantization × backend × device with memory-estimate ranges, skips counted by reason and estimated run time;
the largest context each setup fits; and the totals. The full cell list and JSON/CSV are in listing.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text

from bench.plan.planned import PlannedCell
from bench.plan.time_estimate import CellTime, duration_text
from bench.runners.memory import GIB, CellMemory, gib
from bench.suite import Cell
from bench.suite.knobs import config_name, memory_knobs

CONTEXT_MARKS = (4096, 32768, 131072)  # chat, long documents, reasoning traces
USER_MARKS = (4096, 32768)  # concurrent users the memory holds at these contexts each


def tokens_text(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:.4g}K" if n >= 1024 else str(n)


def fit_summary(item: PlannedCell) -> str:
    """A skip reason as the summary counts it: 'will not fit' names the budget, not each cell's bytes (the
    memory column has those), also for cells forced to run; other reasons are the reason itself."""
    memory = item.memory
    if item.status == "skipped" or memory is None or not memory.estimate or not memory.budget or not memory.problem:
        return item.skip_reason
    where = memory.estimate.where
    text = (
        f"will not fit in {where}: {gib(memory.budget.on(where))} is {memory.budget.source} (memory planner, "
        f"{memory.estimate.basis})"
    )
    return f"{text}; run anyway (--force)" if item.runnable else f"{text}; --force runs them anyway"


@dataclass
class Footnotes:
    """Long texts (skip reasons, notes) printed once under a table, numbered, with how many cells each."""

    texts: dict[str, int] = field(default_factory=dict)  # text -> its number
    counts: dict[str, int] = field(default_factory=dict)  # text -> cells it concerns (0: not about cells)
    printed: int = 0  # footnotes up to this number have been handed out by new_lines()

    def mark(self, text: str, count: int = 1) -> str:
        number = self.texts.setdefault(text, len(self.texts) + 1)
        self.counts[text] = self.counts.get(text, 0) + count
        return f"[{number}]"

    def _count(self, text: str) -> str:
        count = self.counts[text]
        return f"({count} cell{'s' if count != 1 else ''}) " if count else ""

    def new_lines(self) -> list[str]:
        """The footnotes added since the last call (each table's notes go under it, numbering continues)."""
        lines = [
            f"[{number}] {self._count(text)}{text}" for text, number in self.texts.items() if number > self.printed
        ]
        self.printed = len(self.texts)
        return lines


@dataclass
class Group:
    """The cells of one model × quantization × backend × device."""

    cells: int = 0
    runnable: int = 0
    skips: dict[str, int] = field(default_factory=dict)  # reason -> cells
    notes: dict[str, int] = field(default_factory=dict)  # fetch and no-estimate notes -> cells
    low: tuple[int, str] | None = None  # smallest and largest estimate (bytes, memory)
    high: tuple[int, str] | None = None
    seconds: float = 0.0
    unestimated: int = 0  # runnable cells without a time estimate

    def add(self, item: PlannedCell, time: CellTime | None) -> None:
        self.cells += 1
        memory = item.memory
        if memory is not None and memory.estimate is not None:
            total = (memory.estimate.total_bytes, memory.estimate.where)
            self.low = total if self.low is None or total < self.low else self.low
            self.high = total if self.high is None or total > self.high else self.high
        if not item.runnable:
            reason = fit_summary(item)
            self.skips[reason] = self.skips.get(reason, 0) + 1
            return
        self.runnable += 1
        weights = item.weights.describe() if item.weights else ""
        # With synthetic weights the memory planner's "bench run downloads it" is not what happens: say what does.
        notes = (weights, fit_summary(item)) if weights else (_memory_note(memory), fit_summary(item))
        for note in notes:  # runnable cells only: a skip reason says enough
            if note:
                self.notes[note] = self.notes.get(note, 0) + 1
        if time is None:
            self.unestimated += 1
        else:
            self.seconds += time.seconds


def _memory_note(memory: CellMemory | None) -> str:
    if memory is None:
        return ""
    return memory.note if memory.estimate is None else memory.fetch


def _group_key(cell: Cell) -> tuple[str, str, str, str]:
    return cell.model_id, cell.quantization, cell.backend, cell.device_id


def _range_text(group: Group) -> str:
    if group.low is None or group.high is None:
        return "?"
    low, high = group.low[0] / GIB, group.high[0] / GIB
    where = group.high[1]
    return f"{high:.2f} GiB {where}" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}-{high:.2f} GiB {where}"


def _time_text(group: Group) -> str:
    if not group.runnable:
        return ""
    if group.unestimated == group.runnable:
        return "?"
    return duration_text(group.seconds) + (f" + {group.unestimated} ?" if group.unestimated else "")


def summary_table(planned: Sequence[PlannedCell], times: Mapping[str, CellTime], title: str, notes: Footnotes) -> Table:
    """One row per model × quantization × backend × device: cells, to run, skipped (by reason), memory
    estimate range, estimated time."""
    groups: dict[tuple[str, str, str, str], Group] = {}
    for item in planned:
        key = _group_key(item.cell)
        group = groups.get(key) or groups.setdefault(key, Group())
        group.add(item, times.get(item.cell_id))
    table = Table(title=title)
    for column in (
        "model",
        "quant",
        "backend",
        "device",
        "cells",
        "run",
        "skipped",
        "memory (est.)",
        "time (est.)",
        "notes",
    ):
        table.add_column(column, justify="right" if column in ("cells", "run", "skipped", "time (est.)") else "left")
    for (model, quant, backend, device), group in groups.items():
        skipped = group.cells - group.runnable
        marks = " ".join(notes.mark(reason, count) for reason, count in group.skips.items())
        note_marks = " ".join(notes.mark(note, count) for note, count in group.notes.items())
        table.add_row(
            model,
            quant,
            backend,
            device,
            str(group.cells),
            Text(str(group.runnable), style="green"),
            Text(f"{skipped} {marks}" if skipped else "0", style="red" if skipped else ""),
            _range_text(group),
            _time_text(group),
            note_marks,
        )
    return table


def _fit_mark(largest: int | None, trained: int | None, tokens: int) -> Text:
    if largest is None:
        return Text("?", style="dim")
    if largest < tokens:
        return Text("no", style="bold red")
    if trained is not None and trained < tokens:
        return Text("memory only", style="yellow")
    return Text("yes", style="bold green")


def _setups(planned: Sequence[PlannedCell], knobs: Sequence[str]) -> dict[tuple[object, ...], PlannedCell]:
    """One planned cell per model × quantization × device × memory knob values, among cells with an estimate."""
    setups: dict[tuple[object, ...], PlannedCell] = {}
    for item in planned:
        memory = item.memory
        if memory is not None and memory.estimate is not None and memory.model is not None:
            cell = item.cell
            setups.setdefault((cell.model_id, cell.quantization, cell.device_id, *(cell.knob(k) for k in knobs)), item)
    return setups


def _varying(keys: Sequence[tuple[object, ...]], knobs: Sequence[str]) -> list[str]:
    """The memory knobs some device's setups differ in (a knob that differs only between devices is the
    device's own setting, e.g. its offloaded layers)."""
    devices = {key[2] for key in keys}
    return [
        name
        for i, name in enumerate(knobs)
        if any(len({key[3 + i] for key in keys if key[2] == device}) > 1 for device in devices)
    ]


def context_table(planned: Sequence[PlannedCell], notes: Footnotes) -> Table | None:
    """Per model × quantization × device × memory setting, the largest context that fits its memory, and the
    usable one (no more than the model was trained for)."""
    knobs = memory_knobs()
    setups = _setups(planned, knobs)
    if not setups:
        return None
    varying = _varying(list(setups), knobs)
    setup = ("setup",) if varying else ()  # the memory knobs that vary, e.g. "ub256 kvq8_0"
    table = Table(
        title="Largest context that fits (estimated; per sequence: depth + prompt + generated tokens in the KV cache)"
    )
    for column in (
        "model",
        "quant",
        "device",
        *setup,
        "weights",
        "KV per 1K tok",
        "memory",
        "trained",
        "fits memory",
        "usable",
        *(f"fits {tokens_text(t)}" for t in CONTEXT_MARKS),
        *(f"users @{tokens_text(t)}" for t in USER_MARKS),
        "shape from",
    ):
        table.add_column(
            column,
            justify="left" if column in ("model", "quant", "device", "setup", "memory", "shape from") else "right",
        )
    for item in setups.values():
        cell, memory = item.cell, item.memory
        assert memory is not None and memory.estimate is not None and memory.model is not None
        estimate, model, budget = memory.estimate, memory.model, memory.budget
        largest = memory.largest_context()  # per sequence, at the setup's `parallel` (the planner's max_context)
        total = None if largest is None else largest * cell.setting("parallel")
        usable = min(largest, model.n_ctx_train) if largest is not None and model.n_ctx_train else largest
        available = budget.on(estimate.where) if budget else None
        memory_text = (
            "?"
            if available is None or budget is None
            else f"{available / GIB:.1f} GiB {estimate.where} {notes.mark('memory budget: ' + budget.source, 0)}"
        )
        setup_text = (config_name(cell.knobs(), varying),) if varying else ()
        table.add_row(
            cell.model_id,
            cell.quantization,
            cell.device_id,
            *setup_text,
            f"{estimate.weights_bytes / GIB:.2f} GiB",
            f"{model.kv_bytes_per_token * 1024 / 2**20:.0f} MiB",
            memory_text,
            tokens_text(model.n_ctx_train),
            tokens_text(largest),
            tokens_text(usable),
            *(_fit_mark(largest, model.n_ctx_train, t) for t in CONTEXT_MARKS),
            *(_users(total, t) for t in USER_MARKS),
            model.basis,
        )
    return table


def _users(total: int | None, context: int) -> str:
    """How many sequences of `context` tokens the memory holds at once (one KV cache holds them all)."""
    return "?" if total is None else f"{total // context:,}"


def totals_lines(planned: Sequence[PlannedCell], times: Mapping[str, CellTime], model_basis: str) -> list[str]:
    """How many cells run and are skipped, and the estimated wall time of the whole run with its basis."""
    runnable = [p for p in planned if p.runnable]
    too_big = sum(p.status == "will not fit" for p in planned)
    lines = [
        f"{len(runnable)} to run, {len(planned) - len(runnable)} skipped"
        + (f" ({too_big} will not fit; --force runs them anyway)" if too_big else "")
    ]
    known = [times[p.cell_id] for p in runnable if p.cell_id in times]
    if not runnable:
        return lines
    by_basis: dict[str, int] = {}
    for time in known:
        by_basis[time.basis] = by_basis.get(time.basis, 0) + 1
    basis = ", ".join(
        f"{count} cell{'s' if count != 1 else ''} from {'the model' if name == 'model' else name}"
        for name, count in by_basis.items()
    )
    missing = len(runnable) - len(known)
    if missing:
        basis += f"{', ' if basis else ''}{missing} without an estimate (no past results, no memory estimate)"
    total = sum(time.seconds for time in known)
    lines.append(f"Estimated run time: {duration_text(total) if known else '?'} (estimate: {basis})")
    if by_basis.get("model"):
        lines.append(f"Time model: {model_basis}; pass --results with past results of these cells for measured rates")
    return lines


def summary_fields(
    suite: str, host: str, planned: Sequence[PlannedCell], times: Mapping[str, CellTime], model_basis: str
) -> dict[str, object]:
    """The totals as data (the JSON output's "summary")."""
    runnable = [p for p in planned if p.runnable]
    known = [times[p.cell_id] for p in runnable if p.cell_id in times]
    by_basis: dict[str, int] = {}
    for time in known:
        by_basis[time.basis] = by_basis.get(time.basis, 0) + 1
    return {
        "suite": suite,
        "host": host,
        "cells": len(planned),
        "to_run": len(runnable),
        "skipped": len(planned) - len(runnable),
        "will_not_fit": sum(p.status == "will not fit" for p in planned),
        "estimated_seconds": round(sum(t.seconds for t in known), 1) if known else None,
        "time_basis": by_basis,
        "cells_without_time_estimate": len(runnable) - len(known),
        "time_model": model_basis,
    }

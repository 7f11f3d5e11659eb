"""`bench plan`: the suite's cells on this machine, their memory estimates, why any are skipped, and the
largest context each model × quantization × device fits."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.hardware import detect
from bench.plan import PlannedCell, plan_cells, with_memory
from bench.planner import GIB, CellMemory, kv_bytes_per_cell, max_context
from bench.runners.registry import quantization_catalog
from bench.suite import load_suite

CONTEXT_MARKS = (4096, 32768, 131072)  # chat, long documents, reasoning traces


@dataclass
class Footnotes:
    """Long texts (skip reasons, missing estimates) printed once under the table, numbered."""

    texts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def mark(self, text: str) -> str:
        number = self.texts.setdefault(text, len(self.texts) + 1)
        self.counts[text] = self.counts.get(text, 0) + 1
        return f"[{number}]"


def _tokens(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1024:.4g}K" if n >= 1024 else str(n)


def _memory_text(memory: CellMemory | None, notes: Footnotes) -> tuple[str, str]:
    """(estimate, free) columns for one cell."""
    if memory is None or memory.estimate is None:
        note = memory.note if memory else "no estimate"
        return f"? {notes.mark(note)}", ""
    estimate = memory.estimate
    free = memory.budget.on(estimate.where) if memory.budget else None
    return (f"{estimate.total_bytes / GIB:.2f} GiB {estimate.where}",
            "?" if free is None else f"{free / GIB:.1f} GiB")


def _status(item: PlannedCell, notes: Footnotes, force: bool) -> Text:
    if item.runnable:
        if force and item.memory is not None and item.memory.problem:
            return Text(f"run (forced) {notes.mark('will not fit: ' + item.memory.problem)}", style="yellow")
        if item.memory is not None and item.memory.fetch:
            return Text(f"run {notes.mark(item.memory.fetch)}", style="green")
        return Text("run", style="green")
    label = "will not fit" if item.skip_reason.startswith("will not fit") else "skip"
    return Text(f"{label} {notes.mark(item.skip_reason)}", style="red")


def cell_table(planned: list[PlannedCell], title: str, notes: Footnotes, force: bool) -> Table:
    table = Table(title=title)
    for column in ("model", "quant", "backend", "device", "threads", "ngl", "pp", "tg", "depth", "ctx",
                   "memory (est.)", "free", "status"):
        table.add_column(column, justify="right" if column in ("pp", "tg", "depth", "ctx", "free") else "left")
    for item in planned:
        cell = item.cell
        ngl = "" if cell.n_gpu_layers is None else ("all" if cell.n_gpu_layers < 0 else str(cell.n_gpu_layers))
        estimate, free = _memory_text(item.memory, notes)
        n_ctx = item.memory.estimate.n_ctx if item.memory and item.memory.estimate else None
        table.add_row(cell.model_id, cell.quantization, cell.backend, cell.device_id, str(cell.threads or "auto"),
                      ngl, str(cell.prompt_tokens), str(cell.gen_tokens), str(cell.depth),
                      _tokens(n_ctx) if n_ctx else "", estimate, free, _status(item, notes, force))
    return table


def _fit_mark(largest: int | None, trained: int | None, tokens: int) -> Text:
    if largest is None:
        return Text("?", style="dim")
    if largest < tokens:
        return Text("no", style="bold red")
    if trained is not None and trained < tokens:
        return Text("memory only", style="yellow")
    return Text("yes", style="bold green")


def context_table(planned: list[PlannedCell]) -> Table | None:
    """Per model × quantization × device (and memory knobs), the largest context that fits."""
    setups: dict[tuple[object, ...], PlannedCell] = {}
    for item in planned:
        if item.memory is not None and item.memory.estimate is not None and item.memory.shape is not None:
            cell = item.cell
            key = (cell.model_id, cell.quantization, cell.device_id, cell.n_gpu_layers, cell.kv_cache_type,
                   cell.flash_attn, cell.n_ubatch)
            setups.setdefault(key, item)
    if not setups:
        return None
    table = Table(title="Largest context that fits (estimated; prompt + generated tokens in the KV cache)")
    for column in ("model", "quant", "device", "ngl", "KV", "weights", "KV per 1K tok", "memory", "trained",
                   "largest", *(f"fits {_tokens(t)}" for t in CONTEXT_MARKS), "shape from"):
        table.add_column(column, justify="left" if column in ("model", "quant", "device", "memory", "shape from")
                         else "right")
    for item in setups.values():
        cell, memory = item.cell, item.memory
        assert memory is not None and memory.estimate is not None and memory.shape is not None
        estimate, shape, budget = memory.estimate, memory.shape, memory.budget
        largest = max_context(shape, budget, quantization=memory.quantization, n_ubatch=cell.n_ubatch or 512,
                              kv_cache_type=cell.kv_cache_type or "f16", flash_attn=cell.flash_attn or "auto",
                              n_gpu_layers=cell.n_gpu_layers, device_kind=cell.device_kind) if budget else None
        available = budget.on(estimate.where) if budget else None
        per_1k = kv_bytes_per_cell(shape, cell.kv_cache_type or "f16") * 1024
        ngl = "" if cell.n_gpu_layers is None else ("all" if cell.n_gpu_layers < 0 else str(cell.n_gpu_layers))
        memory_text = "?" if available is None else f"{available / GIB:.1f} GiB {estimate.where} ({budget.source})"
        table.add_row(cell.model_id, cell.quantization, cell.device_id, ngl, cell.kv_cache_type or "",
                      f"{estimate.weights_bytes / GIB:.2f} GiB", f"{per_1k / 2**20:.0f} MiB", memory_text,
                      _tokens(shape.n_ctx_train), _tokens(largest) if largest is not None else "?",
                      *(_fit_mark(largest, shape.n_ctx_train, t) for t in CONTEXT_MARKS), shape.basis)
    return table


def print_plan(suite_path: Path, console: Console, force: bool = False) -> int:
    suite = load_suite(suite_path, quantization_catalog())
    fingerprint = detect()
    planned = with_memory(suite, plan_cells(suite, fingerprint), fingerprint, force=force)
    notes = Footnotes()
    console.print(cell_table(planned, f"{suite.name}: {len(planned)} cells on {fingerprint.host}", notes, force))
    for text, number in notes.texts.items():
        console.print(f"[{number}] ({notes.counts[text]} cell{'s' if notes.counts[text] != 1 else ''}) {text}",
                      highlight=False, markup=False, soft_wrap=True)
    contexts = context_table(planned)
    if contexts is not None:
        console.print(contexts)
    runnable = sum(p.runnable for p in planned)
    too_big = sum(p.skip_reason.startswith("will not fit") for p in planned)
    console.print(f"{runnable} to run, {len(planned) - runnable} skipped"
                  + (f" ({too_big} will not fit; --force runs them anyway)" if too_big else ""))
    return 0

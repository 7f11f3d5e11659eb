"""`bench plan`: the expanded cells of a suite on this machine, and why any are skipped."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.hardware import detect
from bench.plan import plan_cells
from bench.suite import load_suite


def print_plan(suite_path: Path, console: Console, force: bool = False) -> int:
    suite = load_suite(suite_path)
    fingerprint = detect()
    planned = plan_cells(suite, fingerprint)
    table = Table(title=f"{suite.name}: {len(planned)} cells on {fingerprint.host}")
    for column in ("model", "quant", "backend", "device", "threads", "ngl", "pp", "tg", "depth", "status"):
        table.add_column(column)
    for item in planned:
        cell = item.cell
        ngl = "" if cell.n_gpu_layers is None else ("all" if cell.n_gpu_layers < 0 else str(cell.n_gpu_layers))
        status = "run" if item.runnable else f"skip: {item.skip_reason}"
        table.add_row(cell.model_id, cell.quantization, cell.backend, cell.device_id, str(cell.threads or "auto"),
                      ngl, str(cell.prompt_tokens), str(cell.gen_tokens), str(cell.depth), status)
    console.print(table)
    runnable = sum(p.runnable for p in planned)
    console.print(f"{runnable} to run, {len(planned) - runnable} skipped")
    return 0

"""`bench run`'s live display: warnings up front (pyperf-style, each with its fix), a progress bar, and the
time left, from the planner's per-cell estimates corrected by how long measured cells really took."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.hardware import SystemWarning
from bench.plan import PlannedCell, estimate_cell_seconds
from bench.run import RunEvents
from bench.run.rows import RowOut
from bench.runners.sustain import sustained_summary
from bench.suite import Cell


def remaining_seconds(estimates: dict[str, float], done: dict[str, float], pending: list[str]) -> float | None:
    """Time left: the pending cells' estimates scaled by actual/estimated time of the cells done so far
    (1 before any is done); without estimates, the mean time of done cells times the pending count."""
    if not pending:
        return 0.0
    known = [c for c in done if c in estimates and estimates[c] > 0]
    scale = sum(done[c] for c in known) / sum(estimates[c] for c in known) if known else 1.0
    if all(c in estimates for c in pending):
        return scale * sum(estimates[c] for c in pending)
    if done:
        return sum(done.values()) / len(done) * len(pending)
    return None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "time left: ?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"time left ~{hours}h{minutes:02d}m" if hours else f"time left ~{minutes}m{secs:02d}s"


class RunProgress:
    """The RunEvents of an interactive or CI run."""

    def __init__(
        self, console: Console, quiet: bool, suite_name: str, estimates: dict[str, float] | None = None
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.suite_name = suite_name
        self.estimates = estimates or {}
        self.pending: list[str] = []
        self.done: dict[str, float] = {}
        self.started_at: float | None = None
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
            disable=quiet,
            transient=False,
        )
        self.task = self.progress.add_task("starting", total=None, eta="")

    def events(self) -> RunEvents:
        say = None if self.quiet else (lambda text: self.console.print(escape(text), soft_wrap=True))
        return RunEvents(planned=self.planned, cell_started=self.cell_started, row_written=self.row_written, say=say)

    def planned(self, planned: list[PlannedCell], path: Path, warnings: list[SystemWarning]) -> None:
        for warning in warnings:
            self.console.print(
                f"[yellow]warning[/] {warning.name}: {escape(warning.message)}\n  fix: {escape(warning.fix)}",
                soft_wrap=True,
            )
        if not self.quiet:
            name = planned[0].cell.suite if planned else self.suite_name
            self.console.print(f"[bold]{escape(name)}[/]: {len(planned)} cells -> {path}", soft_wrap=True)
        self.pending = [p.cell.cell_id for p in planned if p.runnable]
        if not self.estimates:  # the planner's figures until measured cells say how far off they are
            self.estimates = estimate_cell_seconds(planned)
        self.progress.update(self.task, total=len(planned), eta=self._eta())

    def cell_started(self, cell: Cell) -> None:
        self.started_at = time.monotonic()
        self.progress.update(self.task, description=cell.label)

    def row_written(self, row: RowOut) -> None:
        cell_id = row.cell.cell_id
        if cell_id in self.pending:
            self.pending.remove(cell_id)
            if self.started_at is not None and row.status != "skipped":
                self.done[cell_id] = time.monotonic() - self.started_at
        self.progress.update(self.task, advance=1, eta=self._eta())
        if sustained := sustained_summary(row.fields):  # printed even when quiet: it is a result, not progress
            self.console.print(f"{escape(row.cell.label)}: {escape(sustained)}", soft_wrap=True)

    def _eta(self) -> str:
        return format_duration(remaining_seconds(self.estimates, self.done, self.pending))

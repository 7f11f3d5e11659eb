"""Run a suite: plan -> resolve models -> isolated workers -> CSV rows as each cell ends."""
from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.errors import BenchError, ModelUnavailable
from bench.execute.local import CellOutcome, WorkGroup, run_group
from bench.execute.process import Interrupted
from bench.hardware import Fingerprint, detect, system_warnings
from bench.models import ResolvedModel, cell_model_reference, resolve
from bench.plan import PlannedCell, parse_filters, plan_cells, select_filters, select_shard, with_memory
from bench.quality import QualityScheduler, join_quality
from bench.results import (
    COLUMNS,
    ResultRow,
    ResultsWriter,
    drop_partial_last_line,
    measured_cell_ids,
    read_results,
)
from bench.runners.registry import backend, quantization_catalog
from bench.suite import Cell, Suite, load_suite

FAILED_STATUSES = ("failed", "timeout")


@dataclass
class RunOptions:
    output: Path | None = None
    resume: Path | None = None
    shard: tuple[int, int] | None = None
    filters: list[str] = field(default_factory=list)
    quiet: bool = False
    history: Path | None = None
    force: bool = False


@dataclass
class RunSummary:
    path: Path
    counts: dict[str, int]
    interrupted: bool = False


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def default_output(suite: Suite, host: str, results_dir: Path = Path("results")) -> Path:
    return results_dir / f"{suite.name}-{host}-{utc_stamp()}.csv"


def build_row(cell: Cell, status: str, reason: str, fields: dict[str, Any], fingerprint: Fingerprint,
              run_id: str, model_source: str) -> ResultRow:
    unknown = sorted(set(fields) - set(COLUMNS))
    if unknown:  # nothing measured is silently dropped: a field without a column is a bug to fix here
        raise BenchError(f"internal: measured fields without a CSV column: {', '.join(unknown)}")
    values: dict[str, Any] = dict(fields)
    values.update(cell.fields())
    values.update(fingerprint.row_fields(cell.device_kind, cell.device_index))
    values.update(run_id=run_id, cell_id=cell.cell_id, status=status, reason=reason, model_source=model_source)
    return ResultRow.model_validate(values)


class SuiteRun:
    """One execution of a suite; writes each row the moment its cell ends."""

    def __init__(self, suite: Suite, options: RunOptions, console: Console) -> None:
        self.suite = suite
        self.options = options
        self.console = console
        self.fingerprint = detect()
        self.system_warnings = system_warnings(self.fingerprint)
        self.run_id = uuid.uuid4().hex[:12]
        self.counts = {"ok": 0, "failed": 0, "timeout": 0, "skipped": 0}
        self.path = self._output_path()
        # Quality reads its text and task files now: a malformed file stops the run before a row is written.
        self.quality = self._quality_scheduler() if suite.quality.enabled else None
        self.writer = ResultsWriter(self.path)
        self._model_cache: dict[tuple[str, str, str], ResolvedModel | BenchError] = {}
        self._meta_cache: dict[tuple[Path, str], dict[str, Any]] = {}
        self._bandwidth_cache: dict[tuple[str, int], float | None] = {}

    def _quality_scheduler(self) -> QualityScheduler:
        limit_gb = self.suite.limits.memory_limit_gb
        limit = int(limit_gb * 2**30) if limit_gb else None
        if self.options.quiet:
            return QualityScheduler(self.suite, self.resolve_model, limit)
        return QualityScheduler(self.suite, self.resolve_model, limit, lambda text: self.console.print(escape(text)))

    def _output_path(self) -> Path:
        if self.options.resume:
            return self.options.resume
        if self.options.output:
            return self.options.output
        host = self.fingerprint.host or socket.gethostname()
        if self.options.history:
            return self.options.history / host / f"{utc_stamp()}.csv"
        return default_output(self.suite, host)

    # ------------------------------------------------------------------ selection
    def select(self) -> list[PlannedCell]:
        planned = plan_cells(self.suite, self.fingerprint)
        if self.options.shard:
            planned = select_shard(planned, self.options.shard)
        if self.options.filters:
            planned = select_filters(planned, parse_filters(self.options.filters))
        if self.options.resume:
            done = measured_cell_ids(self.options.resume)
            planned = [p for p in planned if p.cell.cell_id not in done]
        # Before any download or build: cells the planner says will not fit are skipped (unless --force).
        return with_memory(self.suite, planned, self.fingerprint, force=self.options.force)

    # ------------------------------------------------------------------ rows
    def record(self, cell: Cell, status: str, reason: str = "", fields: dict[str, Any] | None = None,
               model_source: str = "") -> None:
        fields = dict(fields or {})
        if status == "ok":
            fields.setdefault("mem_bandwidth_gbs", self.bandwidth_gbs(cell))
            fields.setdefault("system_warnings", "; ".join(w.name for w in self.system_warnings))
        row = build_row(cell, status, reason, fields, self.fingerprint, self.run_id, model_source)
        self.writer.append(row)
        self.counts[status] += 1

    def bandwidth_gbs(self, cell: Cell) -> float | None:
        """Memory bandwidth for the roofline, once per device per run: RAM probe for CPU, NVML peak for CUDA."""
        key = (cell.device_kind, cell.device_index)
        if key not in self._bandwidth_cache:
            if cell.device_kind == "cpu":
                from bench.bandwidth import measure_bandwidth_gbs

                self._bandwidth_cache[key] = round(measure_bandwidth_gbs(), 1)
            else:
                gpus = self.fingerprint.gpus
                gpu = gpus[cell.device_index] if 0 <= cell.device_index < len(gpus) else None
                self._bandwidth_cache[key] = gpu.memory_bandwidth_gbs() if gpu else None
        return self._bandwidth_cache[key]

    # ------------------------------------------------------------------ models
    def resolve_model(self, cell: Cell) -> ResolvedModel:
        key = (cell.model_id, cell.quantization, cell.backend)
        if key not in self._model_cache:
            try:
                self._model_cache[key] = self._resolve_uncached(cell)
            except BenchError as exc:
                self._model_cache[key] = exc
        found = self._model_cache[key]
        if isinstance(found, BenchError):
            raise found
        return found

    def _resolve_uncached(self, cell: Cell) -> ResolvedModel:
        model = self.suite.model(cell.model_id)
        spec = backend(cell.backend)
        if spec.derives(model, cell.quantization) and spec.derive is not None:
            return spec.derive(self.suite, model, cell.quantization)
        resolved = resolve(cell_model_reference(model, cell.quantization))
        spec.check_model_file(resolved.path)
        return resolved

    def model_fields(self, resolved: ResolvedModel, backend_name: str) -> dict[str, Any]:
        key = (resolved.path, backend_name)
        if key not in self._meta_cache:
            fields: dict[str, Any] = {"model_file": str(resolved.path), "derived_from": resolved.derived_from}
            if resolved.path.is_file():
                fields["model_file_bytes"] = resolved.path.stat().st_size
                fields.update(backend(backend_name).model_fields(resolved.path))
            self._meta_cache[key] = fields
        return dict(self._meta_cache[key])

    def check_memory(self, cells: list[Cell], resolved: ResolvedModel, source: str,
                     on_progress: Callable[[], None]) -> dict[str, dict[str, Any]]:
        """Estimates from the file now on disk (exact sizes): est_* fields of the cells that fit (all with
        --force); the others are recorded as skipped."""
        planner = backend(cells[0].backend).plan_memory
        if planner is None or not resolved.path.is_file():
            return {cell.cell_id: {} for cell in cells}
        fitting: dict[str, dict[str, Any]] = {}
        estimates = planner(cells, self.suite, self.fingerprint, resolved.path)
        for cell in cells:
            memory = estimates[cell.cell_id]
            reason = "" if self.options.force else memory.skip_reason()
            if reason:
                self.record(cell, "skipped", reason, {**self.model_fields(resolved, cell.backend), **memory.row_fields()},
                            source)
                on_progress()
            else:
                fitting[cell.cell_id] = memory.row_fields()
        return fitting

    # ------------------------------------------------------------------ execution
    def execute(self, planned: list[PlannedCell], on_progress: Callable[[], None],
                on_start: Callable[[Cell], None] | None = None) -> None:
        groups: dict[tuple[Any, ...], list[Cell]] = {}
        planned_memory = {p.cell.cell_id: p.memory.row_fields() for p in planned if p.memory}
        for item in planned:
            if not item.runnable:
                self.record(item.cell, "skipped", item.skip_reason, planned_memory.get(item.cell.cell_id))
                on_progress()
                continue
            groups.setdefault(item.cell.load_key(), []).append(item.cell)
        for cells in groups.values():  # probe now: a probe while a worker measures would disturb it
            self.bandwidth_gbs(cells[0])
        limits = self.suite.limits
        memory_limit = int(limits.memory_limit_gb * 2**30) if limits.memory_limit_gb else None
        for index, cells in enumerate(groups.values()):
            if index:  # what disturbs the machine now, for the rows this group writes (the first group has it)
                self.system_warnings = system_warnings(self.fingerprint)
            first = cells[0]
            source = ""
            try:
                source = cell_model_reference(self.suite.model(first.model_id), first.quantization)
                resolved = self.resolve_model(first)
            except ModelUnavailable as exc:
                for cell in cells:
                    self.record(cell, "skipped", str(exc), planned_memory.get(cell.cell_id), model_source=source)
                    on_progress()
                continue
            except BenchError as exc:
                for cell in cells:
                    self.record(cell, "failed", str(exc), model_source=source)
                    on_progress()
                continue
            static = self.model_fields(resolved, first.backend)
            memory = self.check_memory(cells, resolved, source, on_progress)
            cells = [c for c in cells if c.cell_id in memory]
            if not cells:
                continue
            first = cells[0]
            # Once per quality key (what changes the logits; baseline first), joined onto each of its rows.
            quality = {c.cell_id: self.quality.fields_for(c) for c in cells} if self.quality else {}

            def on_outcome(outcome: CellOutcome, static: dict[str, Any] = static, source: str = source,
                           quality: dict[str, dict[str, Any]] = quality,
                           memory: dict[str, dict[str, Any]] = memory) -> None:
                fields = join_quality({**static, **memory[outcome.cell.cell_id], **outcome.fields},
                                      quality.get(outcome.cell.cell_id, {}))
                self.record(outcome.cell, outcome.status, outcome.reason, fields, source)
                on_progress()

            group = WorkGroup(backend=first.backend, model_path=resolved.path, cells=cells,
                              memory_limit_bytes=memory_limit, load_timeout_s=limits.load_timeout_s,
                              cell_timeout_s=limits.cell_timeout_s)
            run_group(group, on_outcome, on_start)


def check_resume_suite(path: Path, suite_name: str) -> None:
    """Resuming into another suite's file would mix two suites in one CSV (and re-run every cell)."""
    if path.stat().st_size == 0:  # nothing written yet: the writer adds the header
        return
    drop_partial_last_line(path)  # a line cut by a crash; resuming drops it anyway
    others = sorted(set(read_results([path])["suite"].dropna().astype(str)) - {suite_name})
    if others:
        raise BenchError(f"--resume {path}: the file holds results of suite {', '.join(others)}, not {suite_name}; "
                         "resume with the suite that wrote it, or start a new file with --output")


def run_suite(suite_path: Path, options: RunOptions, console: Console | None = None) -> RunSummary:
    console = console or Console(stderr=True)
    suite = load_suite(suite_path, quantization_catalog())
    if options.resume and not options.resume.exists():
        raise BenchError(f"--resume {options.resume}: file not found (start a run with --output instead)")
    if options.resume:
        check_resume_suite(options.resume, suite.name)
    runner = SuiteRun(suite, options, console)
    planned = runner.select()
    # Noise sources are reported up front, as pyperf does, each with its fix (also in CI logs).
    for warning in runner.system_warnings:
        console.print(f"[yellow]warning[/] {warning.name}: {escape(warning.message)}\n  fix: {escape(warning.fix)}")
    if not options.quiet:
        console.print(f"[bold]{suite.name}[/]: {len(planned)} cells -> {runner.path}")
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=options.quiet, transient=False,
    )
    interrupted = False
    with progress:
        task = progress.add_task("starting", total=len(planned))

        def advance() -> None:
            progress.update(task, advance=1)

        def starting(cell: Cell) -> None:
            progress.update(task, description=cell.label)

        try:
            runner.execute(planned, advance, starting)
        except (Interrupted, KeyboardInterrupt):
            interrupted = True
    return RunSummary(path=runner.path, counts=runner.counts, interrupted=interrupted)

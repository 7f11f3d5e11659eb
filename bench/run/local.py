"""Run a suite: plan -> groups of cells measured on this host (bench.run.host) -> one CSV row per cell, appended
as each cell ends. Nothing here prints: the caller (bench.cli.run) is told what happens through RunEvents."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bench.errors import BenchError
from bench.execute.process import Interrupted
from bench.hardware import Fingerprint, SystemWarning
from bench.models.weights import synthetic_model_problems
from bench.plan import PlannedCell, parse_filters, plan_suite
from bench.results import drop_partial_last_line, measured_cell_ids, read_results
from bench.run.host import HostRunner, load_groups
from bench.run.paths import output_path
from bench.run.rows import RowOut, RowSink, skipped_row
from bench.runners.registry import detect_machine, quantization_catalog
from bench.suite import Cell, Suite, Workload, load_suite


@dataclass
class RunOptions:
    output: Path | None = None
    resume: Path | None = None
    shard: tuple[int, int] | None = None
    filters: list[str] = field(default_factory=list)
    quiet: bool = False
    history: Path | None = None
    force: bool = False
    sustain_s: float | None = None  # --sustain: replaces the suite's workload.sustain_s


@dataclass
class RunSummary:
    path: Path
    counts: dict[str, int]
    interrupted: bool = False


@dataclass
class RunEvents:
    """What the caller hears: the plan, each cell starting, each row written, and what quality reports."""

    planned: Callable[[list[PlannedCell], Path, list[SystemWarning]], None] = lambda planned, path, warnings: None
    cell_started: Callable[[Cell], None] = lambda cell: None
    row_written: Callable[[RowOut], None] = lambda row: None
    say: Callable[[str], None] | None = None


def select(suite: Suite, fingerprint: Fingerprint, options: RunOptions) -> list[PlannedCell]:
    """The cells this run measures here: shard, filters, minus those already in --resume's file; each runnable
    or skipped with its reason. Before any download or build, cells the planner says will not fit are skipped
    (unless --force)."""
    return plan_suite(
        suite,
        fingerprint,
        shard=options.shard,
        filters=parse_filters(options.filters) if options.filters else None,
        done=measured_cell_ids(options.resume) if options.resume else (),
        force=options.force,
    )


def check_resume_suite(path: Path, suite_name: str) -> None:
    """Resuming into another suite's file would mix two suites in one CSV (and re-run every cell)."""
    if path.stat().st_size == 0:  # nothing written yet: the writer adds the header
        return
    drop_partial_last_line(path)  # a line cut by a crash; resuming drops it anyway
    others = sorted(set(read_results([path])["suite"].dropna().astype(str)) - {suite_name})
    if others:
        raise BenchError(
            f"--resume {path}: the file holds results of suite {', '.join(others)}, not {suite_name}; "
            "resume with the suite that wrote it, or start a new file with --output"
        )


def load_run_suite(suite_path: Path, options: RunOptions) -> Suite:
    suite = load_suite(suite_path, quantization_catalog(), synthetic_model_problems)
    if options.sustain_s is not None:
        try:
            workload = Workload.model_validate({**suite.workload.model_dump(), "sustain_s": options.sustain_s})
        except ValidationError as exc:
            problems = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
            raise BenchError(f"--sustain {options.sustain_s:g}: {problems}") from None
        suite = suite.model_copy(update={"workload": workload})
    if options.resume and not options.resume.exists():
        raise BenchError(f"--resume {options.resume}: file not found (start a run with --output instead)")
    if options.resume:
        check_resume_suite(options.resume, suite.name)
    return suite


def run_suite(suite_path: Path, options: RunOptions, events: RunEvents | None = None) -> RunSummary:
    """Measure the suite on this machine; each row is on disk the moment its cell ends."""
    events = events or RunEvents()
    suite = load_run_suite(suite_path, options)
    fingerprint = detect_machine()
    host = HostRunner(suite, fingerprint, force=options.force, say=events.say)
    planned = select(suite, fingerprint, options)
    host.adopt_plan(planned)
    sink = RowSink(output_path(suite, fingerprint.host, options), uuid.uuid4().hex[:12], events.row_written)
    events.planned(planned, sink.path, host.system_warnings)
    skipped, groups = load_groups(planned)
    interrupted = False
    try:
        for item in skipped:
            sink.write(skipped_row(item), fingerprint)
        host.probe_bandwidth(groups)
        for index, group in enumerate(groups):
            host.run_group(group, lambda row: sink.write(row, fingerprint), events.cell_started, index > 0)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    return RunSummary(path=sink.path, counts=sink.counts, interrupted=interrupted)

"""`bench run`: measure a suite, one CSV row per cell."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli._console import EXIT_CELLS_FAILED, EXIT_INTERRUPTED, EXIT_OK, console
from bench.errors import BenchError
from bench.execute.fleet_config import DEFAULT_SCHEDULER

if TYPE_CHECKING:
    from bench.cli.progress import RunProgress
    from bench.run import RunOptions, RunSummary


def cmd_run(args: argparse.Namespace) -> int:
    from bench.cli.progress import RunProgress
    from bench.plan import parse_shard
    from bench.run import RunOptions, run_suite

    options = RunOptions(
        output=Path(args.output) if args.output else None,
        resume=Path(args.resume) if args.resume else None,
        shard=parse_shard(args.shard) if args.shard else None,
        filters=list(args.only or []),
        quiet=args.quiet,
        history=Path(args.history) if args.history else None,
        force=args.force,
        sustain_s=args.sustain,
    )
    if args.sustain is not None and args.fleet:
        raise BenchError("--sustain is not sent to a fleet's hosts: set workload.sustain_s in the suite instead")
    if args.hosts and not args.fleet:
        raise BenchError("--hosts names machines of a fleet run: add --fleet ADDRESS")
    display = RunProgress(console, args.quiet, Path(args.suite).stem)
    with display.progress:
        if args.fleet:
            summary = _run_fleet(args, options, display)
        else:
            summary = run_suite(Path(args.suite), options, display.events())
    counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
    if summary.interrupted:
        # Printed whole, never wrapped: the user copies the command.
        console.print(
            f"[yellow]interrupted[/]: {counts or 'no rows'} written to {summary.path}; "
            f"finish with: bench run {args.suite}{_fleet_args(args)} --resume {summary.path}",
            soft_wrap=True,
        )
        return EXIT_INTERRUPTED
    console.print(f"{counts or 'no cells'} -> {summary.path}", soft_wrap=True)
    if args.report:
        from bench.report import write_report

        report = Path(args.report)
        report_path = write_report(
            [summary.path], report, fmt="html" if report.suffix == ".html" else "md", suite_path=Path(args.suite)
        )
        console.print(f"report -> {report_path}")
    return _exit_status(summary.counts)


def _run_fleet(args: argparse.Namespace, options: RunOptions, display: RunProgress) -> RunSummary:
    from bench.cli.fleet import fleet_module
    from bench.execute.fleet_config import CONNECT_TIMEOUT_S

    fleet = fleet_module("fleet")
    hosts = [h.strip() for h in (args.hosts or "").split(",") if h.strip()]
    return fleet.run_fleet(
        Path(args.suite), options, fleet.FleetOptions(args.fleet, hosts, CONNECT_TIMEOUT_S), display.events()
    )


def _fleet_args(args: argparse.Namespace) -> str:
    return (f" --fleet {args.fleet}" + (f" --hosts {args.hosts}" if args.hosts else "")) if args.fleet else ""


def _exit_status(counts: dict[str, int]) -> int:
    """0 when every runnable cell was measured; 3 when a cell failed or timed out, or nothing was measured."""
    broken = counts.get("failed", 0) + counts.get("timeout", 0)
    if broken:
        console.print(f"[red]{broken} cell(s) failed or timed out[/]: exit status {EXIT_CELLS_FAILED}", soft_wrap=True)
        return EXIT_CELLS_FAILED
    if not counts.get("ok", 0):
        console.print(
            f"[red]nothing was measured[/] (every cell skipped; see the rows' reasons): exit status "
            f"{EXIT_CELLS_FAILED}",
            soft_wrap=True,
        )
        return EXIT_CELLS_FAILED
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a suite and append one CSV row per cell")
    run.add_argument("suite")
    run.add_argument("-o", "--output", help="results CSV (default results/<suite>-<host>-<UTC time>.csv)")
    run.add_argument("--resume", metavar="FILE", help="skip cells already in FILE and append the rest to it")
    run.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic slices of the cells")
    run.add_argument(
        "--only",
        "--filter",
        action="append",
        metavar="FIELD=VALUE",
        help="only cells whose FIELD matches (e.g. quant=Q4_K_M, threads=1,2); repeatable",
    )
    run.add_argument("--history", metavar="DIR", help="write to DIR/<host>/<UTC time>.csv")
    run.add_argument("--report", metavar="FILE", help="also write a report of this run to FILE (.md, or .html)")
    run.add_argument("--force", action="store_true", help="run cells the memory planner says will not fit")
    run.add_argument(
        "--sustain",
        type=float,
        metavar="SECONDS",
        help="keep each cell decoding this long after its repetitions, speed per window (workload.sustain_s)",
    )
    run.add_argument(
        "--fleet",
        nargs="?",
        const=DEFAULT_SCHEDULER,
        metavar="ADDRESS",
        help="run on the machines of a Dask scheduler (`bench fleet worker` on each; default "
        f"{DEFAULT_SCHEDULER}), all rows in one CSV",
    )
    run.add_argument("--hosts", metavar="A,B", help="with --fleet: only these hosts (worker names)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar (for CI logs)")
    run.set_defaults(func=cmd_run)

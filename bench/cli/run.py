"""`bench run`: measure a suite, one CSV row per cell."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import EXIT_CELLS_FAILED, EXIT_INTERRUPTED, EXIT_OK, console


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
    )
    display = RunProgress(console, args.quiet, Path(args.suite).stem)
    with display.progress:
        summary = run_suite(Path(args.suite), options, display.events())
    counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
    if summary.interrupted:
        # Printed whole, never wrapped: the user copies the command.
        console.print(f"[yellow]interrupted[/]: {counts or 'no rows'} written to {summary.path}; "
                      f"finish with: bench run {args.suite} --resume {summary.path}", soft_wrap=True)
        return EXIT_INTERRUPTED
    console.print(f"{counts or 'no cells'} -> {summary.path}", soft_wrap=True)
    if args.report:
        from bench.report import write_report

        report = Path(args.report)
        report_path = write_report([summary.path], report, fmt="html" if report.suffix == ".html" else "md",
                                   suite_path=Path(args.suite))
        console.print(f"report -> {report_path}")
    return _exit_status(summary.counts)


def _exit_status(counts: dict[str, int]) -> int:
    """0 when every runnable cell was measured; 3 when a cell failed or timed out, or nothing was measured."""
    broken = counts.get("failed", 0) + counts.get("timeout", 0)
    if broken:
        console.print(f"[red]{broken} cell(s) failed or timed out[/]: exit status {EXIT_CELLS_FAILED}", soft_wrap=True)
        return EXIT_CELLS_FAILED
    if not counts.get("ok", 0):
        console.print(f"[red]nothing was measured[/] (every cell skipped; see the rows' reasons): exit status "
                      f"{EXIT_CELLS_FAILED}", soft_wrap=True)
        return EXIT_CELLS_FAILED
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a suite and append one CSV row per cell")
    run.add_argument("suite")
    run.add_argument("-o", "--output", help="results CSV (default results/<suite>-<host>-<UTC time>.csv)")
    run.add_argument("--resume", metavar="FILE", help="skip cells already in FILE and append the rest to it")
    run.add_argument("--shard", metavar="I/N", help="run the I-th of N deterministic slices of the cells")
    run.add_argument("--only", "--filter", action="append", metavar="FIELD=VALUE",
                     help="only cells whose FIELD matches (e.g. quant=Q4_K_M, threads=1,2); repeatable")
    run.add_argument("--history", metavar="DIR", help="write to DIR/<host>/<UTC time>.csv")
    run.add_argument("--report", metavar="FILE", help="also write a report of this run to FILE (.md, or .html)")
    run.add_argument("--force", action="store_true", help="run cells the memory planner says will not fit")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar (for CI logs)")
    run.set_defaults(func=cmd_run)

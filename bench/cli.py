"""Command line: one sub-command per verb. User mistakes print one clear line, never a traceback."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench import __version__
from bench.errors import BenchError

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130

console = Console(stderr=True)
# Piped to a file or a CI log, rich would squeeze the wide tables into 80 columns.
out = Console() if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=220)


def cmd_hw(args: argparse.Namespace) -> int:
    from bench.hardware import detect, format_fingerprint, system_warnings

    fingerprint = detect()
    out.print(format_fingerprint(fingerprint, system_warnings(fingerprint)))
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.planview import print_plan

    return print_plan(Path(args.suite), out, force=args.force)


def cmd_run(args: argparse.Namespace) -> int:
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
    summary = run_suite(Path(args.suite), options, console)
    counts = ", ".join(f"{n} {status}" for status, n in summary.counts.items() if n)
    if summary.interrupted:
        console.print(f"[yellow]interrupted[/]: {counts or 'no rows'} written to {summary.path}; "
                      f"finish with: bench run {args.suite} --resume {summary.path}")
        return EXIT_INTERRUPTED
    console.print(f"{counts or 'no cells'} -> {summary.path}")
    if args.report:
        from bench.report import write_report

        report = Path(args.report)
        report_path = write_report([summary.path], report, fmt="html" if report.suffix == ".html" else "md",
                                   suite_path=Path(args.suite))
        console.print(f"report -> {report_path}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    # The format follows --format, else the output's extension; the default output follows the format.
    fmt = args.format or ("html" if args.output and Path(args.output).suffix.lower() in (".html", ".htm") else "md")
    output = Path(args.output or f"reports/report.{fmt}")
    path = write_report([Path(p) for p in args.results], output, fmt=fmt,
                        keep_all=args.keep_all, suite_path=Path(args.suite) if args.suite else None)
    console.print(f"report -> {path}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark local LLM inference on this hardware.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hw = sub.add_parser("hw", help="show this machine's hardware fingerprint and system warnings")
    hw.set_defaults(func=cmd_hw)

    plan = sub.add_parser("plan", help="show a suite's cells (and why any are skipped) without running them")
    plan.add_argument("suite")
    plan.add_argument("--force", action="store_true", help="do not skip cells the memory planner says will not fit")
    plan.set_defaults(func=cmd_plan)

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

    report = sub.add_parser("report", help="turn result CSVs (any number, any machines) into a report")
    report.add_argument("results", nargs="+", help="result CSV files or folders")
    report.add_argument("-o", "--output", help="report file (default reports/report.md, or .html with --format html); "
                        "markdown plots go to <name>-plots/ beside it")
    report.add_argument("--format", choices=("md", "html"),
                        help="md (with PNG plots beside it) or html (one self-contained file); default: from -o")
    report.add_argument("--keep-all", action="store_true", help="keep every result, not only the newest per cell/host")
    report.add_argument("--suite", help="suite YAML whose constraints and costs drive the recommendations")
    report.set_defaults(func=cmd_report)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Verbs that live with their stage's module (quantize, compare, trend, export)."""
    registrars = []
    for module_name in ("bench.quantize", "bench.compare", "bench.trend", "bench.export"):
        try:
            module = __import__(module_name, fromlist=["register_cli"])
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        registrars.append(module.register_cli)
    return registrars


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # CI cancelling a job sends SIGTERM: stop like Ctrl-C, so workers are killed and rows kept.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BenchError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

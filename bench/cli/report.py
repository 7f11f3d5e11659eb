"""`bench report`: result CSVs from any number of machines -> one report."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import EXIT_OK, console


def cmd_report(args: argparse.Namespace) -> int:
    from bench.report import write_report

    # The format follows --format, else the output's extension; the default output follows the format.
    fmt = args.format or ("html" if args.output and Path(args.output).suffix.lower() in (".html", ".htm") else "md")
    output = Path(args.output or f"reports/report.{fmt}")
    path = write_report(
        [Path(p) for p in args.results],
        output,
        fmt=fmt,
        keep_all=args.keep_all,
        suite_path=Path(args.suite) if args.suite else None,
    )
    console.print(f"report -> {path}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="turn result CSVs (any number, any machines) into a report")
    report.add_argument("results", nargs="+", help="result CSV files or folders")
    report.add_argument(
        "-o",
        "--output",
        help="report file (default reports/report.md, or .html with --format html); "
        "markdown plots go to <name>-plots/ beside it",
    )
    report.add_argument(
        "--format",
        choices=("md", "html"),
        help="md (with PNG plots beside it) or html (one self-contained file); default: from -o",
    )
    report.add_argument("--keep-all", action="store_true", help="keep every result, not only the newest per cell/host")
    report.add_argument("--suite", help="suite YAML whose constraints and costs drive the recommendations")
    report.set_defaults(func=cmd_report)

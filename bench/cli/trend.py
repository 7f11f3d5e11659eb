"""`bench trend`: each metric of each cell over time."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import console
from bench.cli.metrics_option import parse_metrics


def cmd_trend(args: argparse.Namespace) -> int:
    from bench.compare.trend import write_trend  # matplotlib: only for this command

    result = write_trend(Path(args.directory), Path(args.output), parse_metrics(args.metrics), args.host)
    console.print(f"trend -> {result.markdown} ({len(result.plots)} plots)", soft_wrap=True, highlight=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("trend", help="plot each metric of each cell over time (PNG per metric + markdown)")
    parser.add_argument("directory", metavar="DIR", help="history folder (DIR/<host>/<UTC time>.csv) or result CSVs")
    parser.add_argument(
        "-o",
        "--output",
        default="reports/trend/trend.md",
        help="markdown index; the PNGs go next to it, in <host>/ (default reports/trend/trend.md)",
    )
    parser.add_argument("--metrics", metavar="A,B", help="plot only these metrics (default all that were measured)")
    parser.add_argument("--host", help="only this host's results")
    parser.set_defaults(func=cmd_trend)

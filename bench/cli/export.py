"""`bench export`: results as pytest-benchmark or github-action-benchmark JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import console


def cmd_export(args: argparse.Namespace) -> int:
    from bench.compare.export import export

    path = export([Path(p) for p in args.results], args.format, Path(args.output), args.direction, args.host)
    console.print(f"{args.format} -> {path}", soft_wrap=True, highlight=False)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from bench.compare.export import DIRECTIONS, FORMATS
    from bench.compare.export import __doc__ as EXPORT_DOC

    parser = subparsers.add_parser(
        "export",
        help="write results as pytest-benchmark or github-action-benchmark JSON",
        description=EXPORT_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", nargs="+", help="result CSV files or folders (newest row per cell)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("-o", "--output", required=True, metavar="FILE")
    parser.add_argument(
        "--direction",
        choices=tuple(DIRECTIONS),
        help="github-action-benchmark: bigger-is-better metrics or smaller-is-better ones",
    )
    parser.add_argument("--host", help="only this host's results")
    parser.set_defaults(func=cmd_export)

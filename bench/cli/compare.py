"""`bench compare`: the regression gate (exit 0 ok, 1 regression, 2 cannot compare)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.compare import (
    DEFAULT_THRESHOLD_PCT,
    EXIT_CANNOT_COMPARE,
    METRICS_BY_NAME,
    CompareOptions,
    Comparison,
    compare_history,
    compare_results,
    parse_metrics,
    parse_thresholds,
    to_json,
    to_markdown,
)
from bench.compare import __doc__ as COMPARE_DOC
from bench.errors import BenchError


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        comparison = _comparison_for(args)
    except BenchError as exc:  # unreadable file, bad flag: still write the outputs CI shows
        comparison = Comparison(
            exit_code=EXIT_CANNOT_COMPARE,
            reason=str(exc),
            baseline=args.results[:1],
            current=args.results[1:],
            match_rule="",
            default_threshold_pct=DEFAULT_THRESHOLD_PCT,
            thresholds_pct={},
        )
    markdown = to_markdown(comparison)
    if args.output:
        _write(Path(args.output), markdown)
    if args.json:
        _write(Path(args.json), to_json(comparison))
    sys.stdout.write(to_json(comparison) if args.format == "json" else markdown)
    if comparison.exit_code == EXIT_CANNOT_COMPARE:
        sys.stderr.write(f"error: cannot compare: {comparison.reason}\n")
    return comparison.exit_code


def _comparison_for(args: argparse.Namespace) -> Comparison:
    default, per_metric = parse_thresholds(args.threshold or [])
    options = CompareOptions(
        thresholds=per_metric,
        default_threshold_pct=default,
        metrics=parse_metrics(args.metrics),
        across_machines=args.across_machines,
    )
    if args.history:
        if args.results:
            raise BenchError("bench compare: give either BASELINE CURRENT or --history DIR, not both")
        return compare_history(Path(args.history), args.last, options, args.host)
    if len(args.results) != 2:
        raise BenchError(
            f"bench compare: expected BASELINE CURRENT (two files or folders) or --history DIR, "
            f"got {len(args.results)} path(s)"
        )
    return compare_results([Path(args.results[0])], [Path(args.results[1])], options)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="regression gate: compare results with a baseline (exit 0 ok, 1 regression, 2 cannot compare)",
        description=COMPARE_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "results",
        nargs="*",
        metavar="BASELINE CURRENT",
        help="baseline and current result CSV (file or folder; newest row per cell)",
    )
    parser.add_argument(
        "--history", metavar="DIR", help="compare each host's newest run in DIR/<host>/ with earlier ones"
    )
    parser.add_argument(
        "--last",
        type=int,
        default=1,
        metavar="N",
        help="with --history: baseline = median of the N runs before the newest (default 1)",
    )
    parser.add_argument("--host", help="with --history: only this host's runs")
    parser.add_argument(
        "--threshold",
        action="append",
        metavar="[METRIC=]PCT",
        help=f"percent a metric may worsen (default {DEFAULT_THRESHOLD_PCT:g}); "
        f"repeatable, e.g. --threshold decode_tok_s=3. Metrics: {', '.join(METRICS_BY_NAME)}",
    )
    parser.add_argument("--metrics", metavar="A,B", help="compare only these metrics (default all)")
    parser.add_argument(
        "--across-machines",
        action="store_true",
        help="match cells by cell_id alone, not cell_id + machine fingerprint",
    )
    parser.add_argument(
        "-o", "--output", metavar="MD", help="also write the markdown here (e.g. for $GITHUB_STEP_SUMMARY)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    parser.add_argument("--format", choices=("md", "json"), default="md", help="what to print on stdout")
    parser.set_defaults(func=cmd_compare)

"""`bench compare`: the regression gate (exit 0 ok, 1 regression, 2 cannot compare)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.compare import (
    DEFAULT_THRESHOLD_PCT,
    EXIT_CANNOT_COMPARE,
    MIN_HISTORY_RUNS,
    CompareOptions,
    Comparison,
    compare_history,
    compare_results,
    parse_percent,
    parse_thresholds,
    to_html,
    to_json,
    to_markdown,
)
from bench.compare import __doc__ as COMPARE_DOC
from bench.errors import BenchError
from bench.metrics import METRICS_BY_NAME, parse_metrics
from bench.stats import DEFAULT_FDR_PCT

RENDERERS = {"md": to_markdown, "json": to_json, "html": to_html}


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
    for path, render in ((args.output, to_markdown), (args.json, to_json), (args.html, to_html)):
        if path:
            _write(Path(path), render(comparison))
    sys.stdout.write(RENDERERS[args.format](comparison))
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
        fdr_pct=parse_percent(args.fdr, f"--fdr {args.fdr!r}", "e.g. 5", upper=100.0),
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
        help="with --history: baseline = the N runs before the newest (default 1); from N = "
        f"{MIN_HISTORY_RUNS} whole runs are the unit of the test (night-to-night spread), below it repetitions",
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
        "--fdr",
        default=f"{DEFAULT_FDR_PCT:g}",
        metavar="PCT",
        help="false-discovery rate (Benjamini-Hochberg) across all cells x metrics of the comparison: the "
        f"expected share of flagged regressions that are noise (default {DEFAULT_FDR_PCT:g}%%)",
    )
    parser.add_argument(
        "--across-machines",
        action="store_true",
        help="match cells by cell_id alone, not cell_id + machine (host and stable hardware)",
    )
    parser.add_argument(
        "-o", "--output", metavar="MD", help="also write the markdown here (e.g. for $GITHUB_STEP_SUMMARY)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    parser.add_argument("--html", metavar="FILE", help="also write the comparison as one HTML page")
    parser.add_argument("--format", choices=tuple(RENDERERS), default="md", help="what to print on stdout")
    parser.set_defaults(func=cmd_compare)

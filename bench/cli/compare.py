"""`bench compare`: the regression gate. Did tonight get slower or worse than before?

Cells match by `cell_id` (model, quantization, backend, device, knobs and workload; the same on every
machine) plus the machine: host and stable hardware (CPU, cores, RAM to the GiB, GPU count and model), recomputed
from each row's columns. A driver, CUDA, kernel, llama.cpp, Python or bench update does not break the
match: the comparison lists it under "Changed since baseline" and still judges the cells. Rows measured
while the machine reported noise (their `system_warnings`) are listed too. `--across-machines` matches by
`cell_id` alone (e.g. a replaced runner). On each side the newest row of each cell counts
(bench.results.select: the measurement that finished last).

A metric regressed when its change is worse than its threshold (default 5%) AND a one-sided t-test in the
regression direction is significant after Benjamini-Hochberg false-discovery control at `--fdr` (default
5%) across all cells x metrics of the comparison. The test runs on each metric's own per-repetition
samples (Welch, exact Student t quantiles): prefill and decode tok/s, TTFT, ITL p50/p90/p99 (each
repetition's percentile) and energy per token; per-user decode tok/s, which is the aggregate / sequences on the
same samples, is not tested again beside decode tok/s (one regression would count twice); results written before those samples were stored are
judged by the threshold alone, and a note says so. With `--history DIR --last N`, N >= 3, whole runs are
the unit: the newest run against the spread of the N previous run means (one-sided prediction interval,
N-1 degrees of freedom); with N < 3 repetitions are pooled, and a note says so. Memory and quality are
one deterministic measurement per run, judged by the threshold alone.

A cell that was ok in the baseline and is not measured now fails the gate ("not measured: was ok, now
missing/skipped/failed"): a lost shard, a model file gone or a `fallback: synthetic` switch is not a pass.
`--allow-missing` makes a missing or skipped cell a note; a failed or timed-out cell always fails.

Exit codes: 0 no regression, 1 regression or a cell not measured, 2 cannot compare (the reason is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.cli.metrics_option import parse_metrics
from bench.compare.metrics import DEFAULT_THRESHOLD_PCT, METRICS_BY_NAME, MIN_HISTORY_RUNS
from bench.errors import BenchError
from bench.stats import DEFAULT_FDR_PCT

if TYPE_CHECKING:
    from bench.compare import Comparison

# Imported by the command, not at start-up: the comparison needs pandas, and every other verb would pay for it.
EXIT_CANNOT_COMPARE = 2


def cmd_compare(args: argparse.Namespace) -> int:
    from bench.compare import Comparison, to_html, to_json, to_markdown

    renderers = {"md": to_markdown, "json": to_json, "html": to_html}
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
    sys.stdout.write(renderers[args.format](comparison))
    if comparison.exit_code == EXIT_CANNOT_COMPARE:
        sys.stderr.write(f"error: cannot compare: {comparison.reason}\n")
    return comparison.exit_code


def _comparison_for(args: argparse.Namespace) -> Comparison:
    from bench.compare import CompareOptions, compare_history, compare_results, parse_percent, parse_thresholds

    default, per_metric = parse_thresholds(args.threshold or [])
    options = CompareOptions(
        thresholds=per_metric,
        default_threshold_pct=default,
        metrics=parse_metrics(args.metrics),
        across_machines=args.across_machines,
        fdr_pct=parse_percent(args.fdr, f"--fdr {args.fdr!r}", "e.g. 5", upper=100.0),
        allow_missing=args.allow_missing,
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
        description=__doc__,
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
        "--allow-missing",
        action="store_true",
        help="a cell ok in the baseline but missing or skipped in the current results is a note, not a failure "
        "(a failed or timed-out cell still fails the gate)",
    )
    parser.add_argument(
        "-o", "--output", metavar="MD", help="also write the markdown here (e.g. for $GITHUB_STEP_SUMMARY)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    parser.add_argument("--html", metavar="FILE", help="also write the comparison as one HTML page")
    parser.add_argument("--format", choices=("md", "json", "html"), default="md", help="what to print on stdout")
    parser.set_defaults(func=cmd_compare)

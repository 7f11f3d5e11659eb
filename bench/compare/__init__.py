"""`bench compare`: the regression gate. Did tonight get slower or worse than before?

Cells match by `cell_id` (model, quantization, backend, device, knobs and workload; the same on every
machine) plus the machine: host and stable hardware (CPU, cores, RAM to the GiB, GPU count), recomputed
from each row's columns. A driver, CUDA, kernel, llama.cpp, Python or bench update does not break the
match: the comparison lists it under "Changed since baseline" and still judges the cells. Rows measured
while the machine reported noise (their `system_warnings`) are listed too. `--across-machines` matches by
`cell_id` alone (e.g. a replaced runner). On each side the newest row of each cell counts
(bench.results.select: the measurement that finished last).

A metric regressed when its change is worse than its threshold (default 5%) AND a one-sided t-test in the
regression direction is significant after Benjamini-Hochberg false-discovery control at `--fdr` (default
5%) across all cells x metrics of the comparison. The test runs on each metric's own per-repetition
samples (Welch, exact Student t quantiles): prefill and decode tok/s, TTFT, ITL p50/p90/p99 (each
repetition's percentile) and energy per token; results written before those samples were stored are
judged by the threshold alone, and a note says so. With `--history DIR --last N`, N >= 3, whole runs are
the unit: the newest run against the spread of the N previous run means (one-sided prediction interval,
N-1 degrees of freedom); with N < 3 repetitions are pooled, and a note says so. Memory and quality are
one deterministic measurement per run, judged by the threshold alone.

Exit codes: 0 no regression, 1 regression, 2 cannot compare (the reason is printed).
"""

from bench.compare.history import compare_history, history_runs
from bench.compare.model import (
    EXIT_CANNOT_COMPARE,
    EXIT_OK,
    EXIT_REGRESSION,
    CellComparison,
    CompareOptions,
    Comparison,
    MetricChange,
    SoftwareChange,
    WarningNote,
    parse_percent,
    parse_thresholds,
)
from bench.compare.render import headline, to_blocks, to_html, to_json, to_markdown
from bench.compare.verdict import compare_results
from bench.metrics import DEFAULT_THRESHOLD_PCT, MIN_HISTORY_RUNS

__all__ = [
    "DEFAULT_THRESHOLD_PCT",
    "EXIT_CANNOT_COMPARE",
    "EXIT_OK",
    "EXIT_REGRESSION",
    "MIN_HISTORY_RUNS",
    "CellComparison",
    "CompareOptions",
    "Comparison",
    "MetricChange",
    "SoftwareChange",
    "WarningNote",
    "compare_history",
    "compare_results",
    "headline",
    "history_runs",
    "parse_percent",
    "parse_thresholds",
    "to_blocks",
    "to_html",
    "to_json",
    "to_markdown",
]

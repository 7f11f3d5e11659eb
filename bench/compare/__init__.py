"""`bench compare`: the regression gate. Did tonight get slower or worse than before?

The rules (matching, thresholds, the one-sided test with false-discovery control, history mode, exit codes)
are the command's help text: bench/cli/compare.py, shown by `bench compare --help`.
"""

from bench.compare.history import compare_history, history_runs
from bench.compare.metrics import DEFAULT_THRESHOLD_PCT, MIN_HISTORY_RUNS
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

"""The comparison as data: options, one cell's side, per-metric changes, notes and the whole result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.compare.metrics import DEFAULT_THRESHOLD_PCT, METRICS_BY_NAME
from bench.errors import BenchError
from bench.stats import DEFAULT_FDR_PCT

EXIT_OK, EXIT_REGRESSION, EXIT_CANNOT_COMPARE = 0, 1, 2

CellKey = tuple[str, ...]


@dataclass
class CompareOptions:
    thresholds: dict[str, float] = field(default_factory=dict)  # metric name -> percent
    default_threshold_pct: float = DEFAULT_THRESHOLD_PCT
    metrics: tuple[str, ...] = tuple(METRICS_BY_NAME)
    across_machines: bool = False
    fdr_pct: float = DEFAULT_FDR_PCT
    allow_missing: bool = False  # a cell ok in the baseline but missing or skipped tonight is a note, not a failure

    def threshold_for(self, metric: str) -> float:
        return self.thresholds.get(metric, self.default_threshold_pct)


def parse_thresholds(texts: list[str]) -> tuple[float, dict[str, float]]:
    """`7` sets the default percent, `decode_tok_s=3` one metric's."""
    default, per_metric = DEFAULT_THRESHOLD_PCT, {}
    for text in texts:
        name, sep, value_text = text.rpartition("=")
        name = name.strip()
        if sep and name not in METRICS_BY_NAME:
            raise BenchError(f"--threshold {text!r}: unknown metric {name!r}; known: {', '.join(METRICS_BY_NAME)}")
        value = parse_percent(value_text, f"--threshold {text!r}", "e.g. 5 or decode_tok_s=3")
        if sep:
            per_metric[name] = value
        else:
            default = value
    return default, per_metric


def parse_percent(text: str, what: str, example: str, upper: float = math.inf) -> float:
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise BenchError(f"{what}: expected a percent, {example}") from None
    if not math.isfinite(value) or value < 0 or value > upper:
        raise BenchError(f"{what}: the percent must be a number from 0 to {upper:g}")
    return value


@dataclass
class CellSide:
    """One cell on one side: one run, or the last N runs of a history (oldest first)."""

    key: CellKey
    cell_id: str
    machine: str  # bench.hardware.stable_fingerprint of the newest row
    host: str
    label: str
    suite: str
    status: str
    reason: str
    unstable: bool
    runs: int  # ok runs (1 for a side that was not measured)
    values: dict[str, float]  # metric name -> the side's value (the mean over its runs)
    run_values: dict[str, list[float]]  # metric name -> one value per ok run
    samples: dict[str, list[float]]  # samples column -> repetitions, pooled over the runs
    inputs: dict[str, str]  # e.g. eval_text_sha256 -> its value
    software: dict[str, str]  # software and unmatched hardware columns of the newest row
    system_warnings: list[str]  # non-empty system_warnings of the side's rows

    @property
    def name(self) -> str:
        return f"{self.label} [{self.cell_id}] on {self.host or '?'}"


@dataclass
class MetricChange:
    metric: str
    unit: str
    bigger_is_better: bool
    baseline: float
    current: float
    change_pct: float | None  # (current - baseline) / baseline; None when the baseline is 0
    threshold_pct: float
    worse: bool  # moved in the bad direction (any amount)
    beyond_threshold: bool
    method: str  # "welch" (repetitions), "runs" (prediction test on run means) or "threshold"
    test: str  # how noise was judged, in words, with the statistic
    p_worse: float | None = None  # one-sided p-value of "current is worse than baseline"
    p_better: float | None = None  # the same test in the other direction
    q_value: float | None = None  # Benjamini-Hochberg adjusted p of the direction the metric moved
    verdict: str = "unchanged"  # regression | improvement | within-noise | unchanged


@dataclass
class CellComparison:
    cell_id: str
    machine: str
    host: str
    label: str
    baseline_status: str
    current_status: str
    baseline_runs: int
    unstable: bool
    status_regression: str = ""
    changes: list[MetricChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[MetricChange]:
        return [c for c in self.changes if c.verdict == "regression"]

    @property
    def regressed(self) -> bool:
        return bool(self.status_regression or self.regressions)


@dataclass
class SoftwareChange:
    """A column that differs between matched baseline and current rows: noted, never a reason to skip."""

    host: str
    column: str
    baseline: str
    current: str
    cells: int


@dataclass
class WarningNote:
    """Rows measured while the machine reported noise (their `system_warnings` column)."""

    side: str  # baseline | current
    host: str
    warning: str
    cells: int


@dataclass
class Comparison:
    exit_code: int
    reason: str
    baseline: list[str]
    current: list[str]
    match_rule: str
    default_threshold_pct: float
    thresholds_pct: dict[str, float]
    fdr_pct: float = DEFAULT_FDR_PCT
    test: str = ""
    tests_in_family: int = 0  # how many one-sided tests the false-discovery control spans
    cells: list[CellComparison] = field(default_factory=list)
    only_in_baseline: list[str] = field(default_factory=list)
    not_measured: list[str] = field(default_factory=list)  # ok in the baseline, missing tonight: fails the gate
    only_in_current: list[str] = field(default_factory=list)
    changed_since_baseline: list[SoftwareChange] = field(default_factory=list)
    system_warnings: list[WarningNote] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed_cells(self) -> list[CellComparison]:
        return [c for c in self.cells if c.regressed]

"""The statistics of the gate: per metric and cell a one-sided test in the regression direction, then
Benjamini-Hochberg across every test of the comparison, then the verdicts and the exit code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.compare import notes
from bench.compare.matching import MATCH_RULE, no_match_reason, sides_from_frame
from bench.compare.metrics import DECODE_CONTEXT, METRICS_BY_NAME, MIN_HISTORY_RUNS, Metric
from bench.compare.model import (
    EXIT_CANNOT_COMPARE,
    EXIT_OK,
    EXIT_REGRESSION,
    CellComparison,
    CellKey,
    CellSide,
    CompareOptions,
    Comparison,
    MetricChange,
)
from bench.results import read_results
from bench.stats import UNSTABLE_CV_PCT, TTest, benjamini_hochberg, prediction_t_test, welch_t_test

FAILED_STATUSES = frozenset({"failed", "timeout"})


def test_description(fdr_pct: float) -> str:
    return (
        "A change is a regression when it is worse than its threshold AND a one-sided t-test in the "
        "regression direction (H1: current is worse than baseline) rejects 'no change' after "
        f"Benjamini-Hochberg false-discovery control at {fdr_pct:g}% across all cells x metrics of this "
        "comparison. The test uses each metric's own per-repetition samples (Welch's t, exact Student t "
        "quantiles): prefill and decode tok/s, TTFT, ITL p50/p90/p99 as per-repetition percentiles, energy "
        "per token. A metric whose samples are another tested metric's (per-user decode, aggregate / sequences, "
        f"on decode tok/s's samples) is not tested again: one regression would count twice. With --history and at least {MIN_HISTORY_RUNS} baseline runs, whole runs are the unit: "
        "the current run is tested against the spread of the baseline run means (one-sided prediction "
        "interval, N-1 degrees of freedom). Memory and quality are one deterministic measurement per run: "
        "threshold only. Improvements use the same test in the other direction, with their own "
        "false-discovery control, and never fail the gate."
    )


def _relative_change_pct(baseline: float, current: float) -> float | None:
    if baseline == 0:
        return 0.0 if current == 0 else None
    return 100.0 * (current - baseline) / abs(baseline)


def _noise_test(metric: Metric, base: CellSide, cur: CellSide) -> tuple[str, TTest | None, str]:
    """(method, test, description): how the noise of this metric is judged for this cell."""
    if metric.samples is None:
        return "threshold", None, "threshold only (one deterministic measurement per run)"
    runs = base.run_values.get(metric.name, [])
    by_runs = prediction_t_test(runs, cur.values[metric.name]) if len(runs) >= MIN_HISTORY_RUNS else None
    if by_runs is not None:
        return "runs", by_runs, f"prediction t={by_runs.t:.2f}, {by_runs.dof:.0f} dof, vs {len(runs)} run means"
    before, after = base.samples.get(metric.samples, []), cur.samples.get(metric.samples, [])
    test = welch_t_test(before, after)
    if test is not None:
        return "welch", test, f"Welch t={test.t:.2f}, {test.dof:.1f} dof, {len(before)}+{len(after)} repetitions"
    if not before or not after:
        return "no-samples", None, "threshold only (no per-repetition samples in the CSV)"
    return "threshold", None, "threshold only (fewer than 2 repetitions on a side)"


def compare_metric(metric: Metric, base: CellSide, cur: CellSide, threshold_pct: float) -> MetricChange | None:
    if metric.name not in base.values or metric.name not in cur.values:
        return None
    before, after = base.values[metric.name], cur.values[metric.name]
    change = _relative_change_pct(before, after)
    worse = (after < before) if metric.bigger_is_better else (after > before)
    beyond = abs(after - before) > metric.min_abs_change and (change is None or abs(change) > threshold_pct)
    method, test, text = _noise_test(metric, base, cur)
    p_worse = p_better = None
    if test is not None:
        lower, higher = test.p_less, test.p_greater
        p_worse, p_better = (lower, higher) if metric.bigger_is_better else (higher, lower)
    return MetricChange(
        metric=metric.name,
        unit=metric.unit,
        bigger_is_better=metric.bigger_is_better,
        baseline=before,
        current=after,
        change_pct=change,
        threshold_pct=threshold_pct,
        worse=worse,
        beyond_threshold=beyond,
        method=method,
        test=text,
        p_worse=p_worse,
        p_better=p_better,
    )


def compare_cell(base: CellSide, cur: CellSide, options: CompareOptions) -> CellComparison:
    result = CellComparison(
        cell_id=cur.cell_id,
        machine=cur.machine,
        host=cur.host,
        label=cur.label,
        baseline_status=base.status,
        current_status=cur.status,
        baseline_runs=base.runs,
        unstable=base.unstable or cur.unstable,
    )
    if options.across_machines and base.machine != cur.machine:
        result.notes.append(
            f"baseline measured on {base.host or '?'} ({base.machine}), current on {cur.host or '?'} ({cur.machine})"
        )
    if base.status == "ok" and cur.status != "ok":
        text = f"not measured: was ok, now {cur.status}: {cur.reason}"
        if cur.status in FAILED_STATUSES or not options.allow_missing:
            result.status_regression = text
        else:
            result.notes.append(f"{text} (allowed by --allow-missing)")
        return result
    if base.status != "ok" and cur.status == "ok":
        result.notes.append(f"now ok (was {base.status}: {base.reason})")
        return result
    if base.status != "ok":
        result.notes.append(f"no results on either side ({base.status} -> {cur.status})")
        return result
    tested_samples: set[str] = set()  # a metric derived from another's samples is that metric's test again
    noted: set[str] = set()  # one note per input that differs, not one per metric it keeps from the test
    for name in options.metrics:
        metric = METRICS_BY_NAME[name]
        if metric.samples is not None and metric.samples in tested_samples:
            continue
        if metric.same_input and base.inputs.get(metric.same_input) != cur.inputs.get(metric.same_input):
            if metric.name in base.values and metric.name in cur.values and metric.same_input not in noted:
                result.notes.append(_different_input_note(metric.name, metric.same_input, base, cur))
                noted.add(metric.same_input)
            continue
        change = compare_metric(metric, base, cur, options.threshold_for(name))
        if change is not None:
            result.changes.append(change)
            tested_samples.add(metric.samples or "")
    if result.unstable:
        result.notes.append(
            f"unstable: a spread over {UNSTABLE_CV_PCT:g}% CV across repetitions; "
            "quiet the machine (see `bench hw`) or raise workload.repetitions"
        )
    return result


def _different_input_note(name: str, column: str, base: CellSide, cur: CellSide) -> str:
    if column != DECODE_CONTEXT:
        return f"{name} not compared: measured on different input ({column})"
    before, now = (side.inputs.get(column) or "depth (an older bench: prompt dropped first)" for side in (base, cur))
    return f"decode figures not compared: decoded after {before} cached tokens in the baseline, after {now} now"


def compare_sides(
    baseline: dict[CellKey, CellSide], current: dict[CellKey, CellSide], options: CompareOptions, into: Comparison
) -> None:
    """Adds the matched cells, the unmatched ones and the update notes of the matched rows to `into`."""
    pairs = []
    for key, cur in current.items():
        if key in baseline:
            into.cells.append(compare_cell(baseline[key], cur, options))
            pairs.append((baseline[key], cur))
        else:
            into.only_in_current.append(cur.name)
    for key, base in baseline.items():
        if key in current:
            continue
        if base.status == "ok" and not options.allow_missing:
            into.not_measured.append(f"{base.name}: not measured: was ok, now missing")
        else:
            into.only_in_baseline.append(base.name)
    notes.add_update_notes(into, pairs)


def _verdict(change: MetricChange, fdr: float) -> str:
    if not change.beyond_threshold:
        return "unchanged"
    if change.q_value is not None and change.q_value > fdr:
        return "within-noise"
    return "regression" if change.worse else "improvement"


def apply_false_discovery_control(comparison: Comparison, fdr_pct: float) -> None:
    """Benjamini-Hochberg over every tested metric of every cell (the regression family), and separately
    over the same tests in the improving direction; then each change's verdict."""
    changes = [change for cell in comparison.cells for change in cell.changes]
    tested = [c for c in changes if c.p_worse is not None and c.p_better is not None]
    q_worse = benjamini_hochberg([c.p_worse for c in tested if c.p_worse is not None])
    q_better = benjamini_hochberg([c.p_better for c in tested if c.p_better is not None])
    for change, worse_q, better_q in zip(tested, q_worse, q_better, strict=True):
        change.q_value = worse_q if change.worse else better_q
    for change in changes:
        change.verdict = _verdict(change, fdr_pct / 100.0)
    comparison.tests_in_family = len(tested)


def finish(
    comparison: Comparison,
    baseline: dict[CellKey, CellSide],
    current: dict[CellKey, CellSide],
    options: CompareOptions,
) -> Comparison:
    """Judges every change, adds the method notes, sets the exit code and, when nothing compares, the reason."""
    apply_false_discovery_control(comparison, options.fdr_pct)
    notes.add_method_notes(comparison)
    comparable = [c for c in comparison.cells if c.changes or c.status_regression]
    if not comparison.cells:
        comparison.exit_code = EXIT_CANNOT_COMPARE
        comparison.reason = comparison.reason or no_match_reason(baseline, current)
    elif not comparable:
        comparison.exit_code = EXIT_CANNOT_COMPARE
        comparison.reason = comparison.reason or (
            f"none of the {len(comparison.cells)} matched cells has results on both sides "
            f"({_status_counts(comparison.cells)})"
        )
    else:
        failed = comparison.regressed_cells or comparison.not_measured
        comparison.exit_code = EXIT_REGRESSION if failed else EXIT_OK
    return comparison


def _status_counts(cells: list[CellComparison]) -> str:
    pairs = pd.Series([f"{c.baseline_status} -> {c.current_status}" for c in cells]).value_counts()
    return ", ".join(f"{n} {pair}" for pair, n in pairs.items())


def new_comparison(baseline: list[str], current: list[str], options: CompareOptions) -> Comparison:
    return Comparison(
        exit_code=EXIT_OK,
        reason="",
        baseline=baseline,
        current=current,
        match_rule=MATCH_RULE[options.across_machines],
        default_threshold_pct=options.default_threshold_pct,
        thresholds_pct=dict(options.thresholds),
        fdr_pct=options.fdr_pct,
        test=test_description(options.fdr_pct),
    )


def compare_results(baseline_paths: list[Path], current_paths: list[Path], options: CompareOptions) -> Comparison:
    """BASELINE vs CURRENT (files or folders of result CSVs); newest row per cell on each side."""
    comparison = new_comparison([str(p) for p in baseline_paths], [str(p) for p in current_paths], options)
    baseline = sides_from_frame(read_results(baseline_paths), options.across_machines)
    current = sides_from_frame(read_results(current_paths), options.across_machines)
    compare_sides(baseline, current, options, comparison)
    return finish(comparison, baseline, current, options)

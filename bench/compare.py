"""`bench compare`: the regression gate. Did tonight get slower or worse than before?

Cells match by `cell_id` (a hash of model, quantization, backend, device, knobs and workload; the same on
every machine) plus `fingerprint` (host and hardware): a regression gate compares a machine with itself.
`--across-machines` matches by `cell_id` alone (e.g. a replaced runner).

A metric regressed when its change is worse than the threshold (default 5%) AND larger than the run-to-run
noise: Welch's t-test on the per-repetition samples (95%, two-sided). TTFT has its own per-repetition
samples; ITL percentiles are judged with the decode repetitions they come from; memory and quality
are single, deterministic measurements judged by the threshold alone.

Exit codes: 0 no regression, 1 regression, 2 cannot compare (the reason is printed).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from bench.errors import BenchError
from bench.results import read_results, samples_from_text
from bench.stats import UNSTABLE_CV_PCT, WelchTest, welch_t_test
from bench.suite import Cell

EXIT_OK, EXIT_REGRESSION, EXIT_CANNOT_COMPARE = 0, 1, 2
DEFAULT_THRESHOLD_PCT = 5.0
FAILED_STATUSES = frozenset({"failed", "timeout"})


@dataclass(frozen=True)
class Metric:
    name: str  # CLI name, e.g. in --threshold decode_tok_s=3
    column: str  # results CSV column
    unit: str
    bigger_is_better: bool
    noise_samples: str | None = None  # repetition samples (own, or the phase it comes from) judging noise
    same_input: str | None = None  # column that must match on both sides (quality is measured on a text)
    min_abs_change: float = (
        0.0  # changes smaller than this are no change (KLD near 0 has huge relative changes)
    )
    samples_bigger_is_better: bool = True  # direction of the noise samples (tok/s up, TTFT ms down)


METRICS: tuple[Metric, ...] = (
    Metric("prefill_tok_s", "prefill_tok_s_mean", "tok/s", True, "prefill_tok_s_samples"),
    Metric("decode_tok_s", "decode_tok_s_mean", "tok/s", True, "decode_tok_s_samples"),
    Metric("ttft_ms", "ttft_ms_mean", "ms", False, "ttft_ms_samples", samples_bigger_is_better=False),
    Metric("itl_ms_p50", "itl_ms_p50", "ms", False, "decode_tok_s_samples"),
    Metric("itl_ms_p99", "itl_ms_p99", "ms", False, "decode_tok_s_samples"),
    Metric("peak_rss_bytes", "peak_rss_bytes", "bytes", False),
    Metric("peak_vram_bytes", "peak_vram_bytes", "bytes", False),
    Metric("energy_j_per_token", "energy_j_per_decode_token", "J/token", False),
    Metric("ppl", "ppl", "", False, same_input="eval_text_sha256"),
    Metric("kld_mean", "kld_mean", "nats", False, same_input="eval_text_sha256", min_abs_change=1e-3),
    Metric("task_accuracy_pct", "task_accuracy_pct", "%", True, same_input="task_sha256"),
)
METRICS_BY_NAME = {m.name: m for m in METRICS}
# The samples columns hold tok/s, where bigger is better.

TEST_DESCRIPTION = (
    "A change is a regression when it is worse than the threshold AND Welch's t-test on the "
    "per-repetition samples rejects 'no change' at 95% (two-sided). TTFT is tested on its own "
    "repetitions and ITL on the decode repetitions it comes from; memory, energy and quality have one "
    "measurement per run and are judged by the threshold alone."
)

CellKey = tuple[str, ...]


# ------------------------------------------------------------------------------------------- options


@dataclass
class CompareOptions:
    thresholds: dict[str, float] = field(default_factory=dict)  # metric name -> percent
    default_threshold_pct: float = DEFAULT_THRESHOLD_PCT
    metrics: tuple[str, ...] = tuple(m.name for m in METRICS)
    across_machines: bool = False

    def threshold_for(self, metric: str) -> float:
        return self.thresholds.get(metric, self.default_threshold_pct)

    def key_columns(self) -> tuple[str, ...]:
        return ("cell_id",) if self.across_machines else ("cell_id", "fingerprint")


def parse_thresholds(texts: list[str]) -> tuple[float, dict[str, float]]:
    """`7` sets the default percent, `decode_tok_s=3` one metric's."""
    default, per_metric = DEFAULT_THRESHOLD_PCT, {}
    for text in texts:
        name, sep, value_text = text.rpartition("=")
        name = name.strip()
        if sep and name not in METRICS_BY_NAME:
            raise BenchError(
                f"--threshold {text!r}: unknown metric {name!r}; known: {', '.join(METRICS_BY_NAME)}"
            )
        try:
            value = float(value_text.strip().removesuffix("%"))
        except ValueError:
            raise BenchError(f"--threshold {text!r}: expected a percent, e.g. 5 or decode_tok_s=3") from None
        if not math.isfinite(value) or value < 0:
            raise BenchError(f"--threshold {text!r}: the percent must be a number >= 0")
        if sep:
            per_metric[name] = value
        else:
            default = value
    return default, per_metric


def parse_metrics(text: str | None) -> tuple[str, ...]:
    if not text:
        return tuple(m.name for m in METRICS)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS_BY_NAME]
    if unknown or not names:
        raise BenchError(
            f"--metrics {text!r}: unknown metric(s) {unknown}; known: {', '.join(METRICS_BY_NAME)}"
        )
    return names


# ------------------------------------------------------------------------------------------- one side


@dataclass
class CellSide:
    """One cell's measurements on one side (one run, or the last N runs of a history)."""

    key: CellKey
    cell_id: str
    fingerprint: str
    host: str
    label: str
    suite: str
    status: str
    reason: str
    unstable: bool
    runs: int
    values: dict[str, float]  # metric name -> value (median over runs)
    samples: dict[str, list[float]]  # samples column -> repetitions (pooled over runs)
    inputs: dict[str, str]  # e.g. eval_text_sha256 -> its value


def _clean(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def row_label(row: pd.Series) -> str:
    """The cell's readable label (as `bench run` prints it)."""
    fields = {name: _clean(row.get(name)) for name in Cell.model_fields}
    try:
        return Cell.model_validate(fields).label
    except ValidationError:  # a hand-made CSV lacking workload columns: name what it has
        parts = [str(fields[k]) for k in ("model_id", "quantization", "backend", "device_id") if fields[k]]
        return " ".join(parts) or f"cell {row.get('cell_id')}"


def _row_unstable(row: pd.Series) -> bool:
    flagged = _clean(row.get("unstable"))
    if flagged is not None and bool(flagged):
        return True
    cvs = [_clean(row.get(c)) for c in ("prefill_tok_s_cv_pct", "decode_tok_s_cv_pct")]
    return any(cv is not None and float(cv) > UNSTABLE_CV_PCT for cv in cvs)


def side_from_rows(key: CellKey, rows: list[pd.Series]) -> CellSide:
    """`rows` are one cell's rows, oldest first, at most one per run."""
    newest = rows[-1]
    ok = [r for r in rows if r.get("status") == "ok"]
    values: dict[str, float] = {}
    samples: dict[str, list[float]] = {}
    for metric in METRICS:
        found = [float(v) for v in (_clean(r.get(metric.column)) for r in ok) if v is not None]
        if found:
            values[metric.name] = statistics.median(found)
        if metric.noise_samples and metric.noise_samples not in samples:
            samples[metric.noise_samples] = [
                s for r in ok for s in samples_from_text(_clean(r.get(metric.noise_samples)))
            ]
    inputs = {
        m.same_input: str(_clean(ok[-1].get(m.same_input)) or "") for m in METRICS if m.same_input and ok
    }
    return CellSide(
        key=key,
        cell_id=str(newest.get("cell_id")),
        fingerprint=str(_clean(newest.get("fingerprint")) or ""),
        host=str(_clean(newest.get("host")) or ""),
        label=row_label(newest),
        suite=str(_clean(newest.get("suite")) or ""),
        status="ok" if ok else str(_clean(newest.get("status")) or ""),
        reason="" if ok else str(_clean(newest.get("reason")) or ""),
        unstable=any(_row_unstable(r) for r in ok),
        runs=len(ok) or 1,
        values=values,
        samples=samples,
        inputs=inputs,
    )


def run_order(frame: pd.DataFrame) -> pd.Series:
    """A sortable time per row: its file's first cell start (else the file's mtime), then its line."""
    file_times: dict[str, str] = {}
    for source, group in frame.groupby("source_file", sort=False):
        started = group["started_utc"].dropna()
        if len(started):
            file_times[str(source)] = str(started.min())
        else:
            mtime = Path(str(source)).stat().st_mtime if Path(str(source)).exists() else 0.0
            file_times[str(source)] = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame["source_file"].map(file_times)


def latest_rows(
    frame: pd.DataFrame, key_columns: tuple[str, ...] = ("cell_id", "fingerprint")
) -> pd.DataFrame:
    """The newest row of each cell (files later in time win; within a file, later lines win)."""
    if frame.empty:
        return frame
    ordered = frame.assign(_order=run_order(frame), _line=range(len(frame)))
    ordered = ordered.sort_values(["_order", "_line"], kind="stable")
    keys = ordered[list(key_columns)].astype(str)
    return ordered[~keys.duplicated(keep="last")].drop(columns=["_order", "_line"])


def _key(row: pd.Series, key_columns: tuple[str, ...]) -> CellKey:
    return tuple(str(_clean(row.get(c)) or "") for c in key_columns)


def sides_from_frame(frame: pd.DataFrame, key_columns: tuple[str, ...]) -> dict[CellKey, CellSide]:
    """One side from result files: the newest row of each cell."""
    if "fingerprint" not in key_columns:
        _reject_ambiguous(frame)
    latest = latest_rows(frame, key_columns)
    return {(k := _key(row, key_columns)): side_from_rows(k, [row]) for _, row in latest.iterrows()}


def sides_from_runs(frames: list[pd.DataFrame], key_columns: tuple[str, ...]) -> dict[CellKey, CellSide]:
    """One side from several runs (oldest first): per cell, the median over runs, samples pooled."""
    rows: dict[CellKey, list[pd.Series]] = {}
    for frame in frames:
        for _, row in latest_rows(frame, key_columns).iterrows():
            rows.setdefault(_key(row, key_columns), []).append(row)
    return {key: side_from_rows(key, found) for key, found in rows.items()}


def _reject_ambiguous(frame: pd.DataFrame) -> None:
    """Matching by cell_id alone needs one machine per cell on each side."""
    machines = frame.groupby("cell_id")["fingerprint"].nunique()
    if (machines > 1).any():
        cell_id = machines[machines > 1].index[0]
        raise BenchError(
            f"--across-machines: cell {cell_id} was measured on {int(machines.max())} machines in "
            f"{', '.join(sorted(set(frame['source_file'].astype(str))))}; give one machine's results per side"
        )


# ------------------------------------------------------------------------------------------- comparing


@dataclass
class MetricChange:
    metric: str
    unit: str
    bigger_is_better: bool
    baseline: float
    current: float
    change_pct: float | None  # (current - baseline) / baseline; None when the baseline is 0
    threshold_pct: float
    verdict: str  # regression | improvement | within-noise | unchanged
    test: str  # how noise was judged, e.g. "Welch t=-24.5, dof=4.0 on decode repetitions"


@dataclass
class CellComparison:
    cell_id: str
    fingerprint: str
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
class Comparison:
    exit_code: int
    reason: str
    baseline: list[str]
    current: list[str]
    match_rule: str
    default_threshold_pct: float
    thresholds_pct: dict[str, float]
    test: str = TEST_DESCRIPTION
    cells: list[CellComparison] = field(default_factory=list)
    only_in_baseline: list[str] = field(default_factory=list)
    only_in_current: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed_cells(self) -> list[CellComparison]:
        return [c for c in self.cells if c.regressed]


def _relative_change_pct(baseline: float, current: float) -> float | None:
    if baseline == 0:
        return 0.0 if current == 0 else None
    return 100.0 * (current - baseline) / abs(baseline)


def _noise_test(metric: Metric, base: CellSide, cur: CellSide) -> tuple[WelchTest | None, str]:
    if metric.noise_samples is None:
        return None, "threshold only (one measurement per run)"
    test = welch_t_test(base.samples.get(metric.noise_samples, []), cur.samples.get(metric.noise_samples, []))
    phase = metric.noise_samples.split("_")[0]
    if test is None:
        return None, f"threshold only (fewer than 2 {phase} repetitions on a side)"
    return test, f"Welch t={test.t:.2f}, dof={test.dof:.1f} on {phase} repetitions"


def compare_metric(
    metric: Metric, base: CellSide, cur: CellSide, threshold_pct: float
) -> MetricChange | None:
    if metric.name not in base.values or metric.name not in cur.values:
        return None
    before, after = base.values[metric.name], cur.values[metric.name]
    change = _relative_change_pct(before, after)
    worse = (after < before) if metric.bigger_is_better else (after > before)
    beyond = abs(after - before) > metric.min_abs_change and (change is None or abs(change) > threshold_pct)
    test, test_text = _noise_test(metric, base, cur)
    if not beyond:
        verdict = "unchanged"
    elif test is not None and not _real_change(test, worse, metric):
        verdict = "within-noise"
    else:
        verdict = "regression" if worse else "improvement"
    return MetricChange(
        metric.name,
        metric.unit,
        metric.bigger_is_better,
        before,
        after,
        change,
        threshold_pct,
        verdict,
        test_text,
    )


def _real_change(test: WelchTest, worse: bool, metric: Metric) -> bool:
    """Significant, and the repetitions moved the same way as the metric (TTFT up = prefill tok/s down)."""
    samples_worse = test.t < 0 if metric.samples_bigger_is_better else test.t > 0
    return test.significant and samples_worse == worse


def compare_cell(base: CellSide, cur: CellSide, options: CompareOptions) -> CellComparison:
    result = CellComparison(
        cell_id=cur.cell_id,
        fingerprint=cur.fingerprint,
        host=cur.host,
        label=cur.label,
        baseline_status=base.status,
        current_status=cur.status,
        baseline_runs=base.runs,
        unstable=base.unstable or cur.unstable,
    )
    if options.across_machines and base.fingerprint != cur.fingerprint:
        result.notes.append(
            f"baseline measured on {base.host or '?'} ({base.fingerprint}), current on "
            f"{cur.host or '?'} ({cur.fingerprint})"
        )
    if base.status == "ok" and cur.status in FAILED_STATUSES:
        result.status_regression = f"was ok, now {cur.status}: {cur.reason}"
        return result
    if base.status == "ok" and cur.status != "ok":
        result.notes.append(f"not measured this time ({cur.status}: {cur.reason})")
        return result
    if base.status != "ok" and cur.status == "ok":
        result.notes.append(f"now ok (was {base.status}: {base.reason})")
        return result
    if base.status != "ok":
        result.notes.append(f"no results on either side ({base.status} -> {cur.status})")
        return result
    for name in options.metrics:
        metric = METRICS_BY_NAME[name]
        if metric.same_input and base.inputs.get(metric.same_input) != cur.inputs.get(metric.same_input):
            if metric.name in base.values and metric.name in cur.values:
                result.notes.append(
                    f"{metric.name} not compared: measured on different input ({metric.same_input})"
                )
            continue
        change = compare_metric(metric, base, cur, options.threshold_for(name))
        if change is not None:
            result.changes.append(change)
    if result.unstable:
        result.notes.append(
            f"unstable: a spread over {UNSTABLE_CV_PCT:.0f}% CV across repetitions; "
            "quiet the machine (see `bench hw`) or raise workload.repetitions"
        )
    return result


def compare_sides(
    baseline: dict[CellKey, CellSide],
    current: dict[CellKey, CellSide],
    options: CompareOptions,
    into: Comparison,
) -> None:
    """Adds the matched cells and the unmatched ones to `into`."""
    for key, cur in current.items():
        if key in baseline:
            into.cells.append(compare_cell(baseline[key], cur, options))
        else:
            into.only_in_current.append(_side_name(cur))
    into.only_in_baseline += [_side_name(b) for k, b in baseline.items() if k not in current]


def _side_name(side: CellSide) -> str:
    return f"{side.label} [{side.cell_id}] on {side.host or '?'}"


def finish(
    comparison: Comparison, baseline: dict[CellKey, CellSide], current: dict[CellKey, CellSide]
) -> Comparison:
    """Sets the exit code and, when nothing can be compared, the reason."""
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
        comparison.exit_code = EXIT_REGRESSION if comparison.regressed_cells else EXIT_OK
    return comparison


def _status_counts(cells: list[CellComparison]) -> str:
    pairs = pd.Series([f"{c.baseline_status} -> {c.current_status}" for c in cells]).value_counts()
    return ", ".join(f"{n} {pair}" for pair, n in pairs.items())


def no_match_reason(baseline: dict[CellKey, CellSide], current: dict[CellKey, CellSide]) -> str:
    if not baseline or not current:
        return f"the {'baseline' if not baseline else 'current'} side holds no result rows"
    base_suites = sorted({b.suite for b in baseline.values()})
    cur_suites = sorted({c.suite for c in current.values()})
    if set(base_suites).isdisjoint(cur_suites):
        return (
            f"different suites: baseline has {', '.join(base_suites)}, current has {', '.join(cur_suites)}; "
            "compare results of the same suite"
        )
    base_cells = {b.cell_id for b in baseline.values()}
    cur_cells = {c.cell_id for c in current.values()}
    if base_cells.isdisjoint(cur_cells):
        return (
            "no cell in common: the suites differ in models, quantizations, devices, knobs or workload "
            "(a cell is identified by all of them, the `cell_id` column)"
        )

    def machines(sides: dict[CellKey, CellSide]) -> str:
        return ", ".join(sorted({f"{s.host} ({s.fingerprint})" for s in sides.values()}))

    return (
        f"the common cells were measured on different machines: baseline on {machines(baseline)}, current on "
        f"{machines(current)}; a regression gate compares a machine with itself "
        "(pass --across-machines to match cells by cell_id alone)"
    )


def compare_results(
    baseline_paths: list[Path], current_paths: list[Path], options: CompareOptions
) -> Comparison:
    """BASELINE vs CURRENT (files or folders of result CSVs); newest row per cell on each side."""
    comparison = _new_comparison([str(p) for p in baseline_paths], [str(p) for p in current_paths], options)
    keys = options.key_columns()
    baseline = sides_from_frame(read_results(baseline_paths), keys)
    current = sides_from_frame(read_results(current_paths), keys)
    compare_sides(baseline, current, options, comparison)
    return finish(comparison, baseline, current)


def _new_comparison(baseline: list[str], current: list[str], options: CompareOptions) -> Comparison:
    rule = "cell_id (any machine)" if options.across_machines else "cell_id + fingerprint (same machine)"
    return Comparison(
        exit_code=EXIT_OK,
        reason="",
        baseline=baseline,
        current=current,
        match_rule=rule,
        default_threshold_pct=options.default_threshold_pct,
        thresholds_pct=dict(options.thresholds),
    )


# ------------------------------------------------------------------------------------------- history


def history_runs(directory: Path) -> dict[str, list[Path]]:
    """DIR/<host>/<UTC time>.csv as written by `bench run --history DIR`: per host, runs oldest first."""
    if not directory.is_dir():
        raise BenchError(
            f"--history {directory}: not a folder (expected DIR/<host>/<UTC time>.csv from "
            "`bench run --history DIR`)"
        )
    runs = {host.name: sorted(host.glob("*.csv")) for host in sorted(directory.iterdir()) if host.is_dir()}
    runs = {host: files for host, files in runs.items() if files}
    if not runs:
        raise BenchError(
            f"--history {directory}: no runs found (expected DIR/<host>/<UTC time>.csv from "
            "`bench run --history DIR`)"
        )
    return runs


def compare_history(
    directory: Path, last: int, options: CompareOptions, host: str | None = None
) -> Comparison:
    """Per host: the newest run against the previous one, or the median of the `last` runs before it."""
    if last < 1:
        raise BenchError(f"--last {last}: expected a number of runs >= 1")
    runs = history_runs(directory)
    if host is not None:
        if host not in runs:
            raise BenchError(
                f"--host {host}: no runs under {directory / host}; hosts there: {', '.join(runs)}"
            )
        runs = {host: runs[host]}
    comparison = _new_comparison([], [], options)
    keys = options.key_columns()
    all_baseline: dict[CellKey, CellSide] = {}
    all_current: dict[CellKey, CellSide] = {}
    for name, files in runs.items():
        if len(files) < 2:
            comparison.notes.append(f"{name}: only one run ({files[0].name}), nothing to compare with yet")
            continue
        previous = files[-1 - last : -1]
        comparison.baseline += [str(p) for p in previous]
        comparison.current.append(str(files[-1]))
        baseline = sides_from_runs([read_results([p]) for p in previous], keys)
        current = sides_from_frame(read_results([files[-1]]), keys)
        compare_sides(baseline, current, options, comparison)
        all_baseline.update({(name, *k): v for k, v in baseline.items()})
        all_current.update({(name, *k): v for k, v in current.items()})
    if not comparison.current:
        comparison.reason = (
            f"no host under {directory} has two runs yet "
            f"({', '.join(f'{h}: {len(f)}' for h, f in runs.items())})"
        )
    return finish(comparison, all_baseline, all_current)


# ------------------------------------------------------------------------------------------- output


def escape_md(value: Any) -> str:
    """Text safe in a markdown table cell (labels and reasons come from CSVs): no pipes, newlines, HTML."""
    text = "" if _clean(value) is None else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def display_scale(unit: str) -> tuple[float, str]:
    """Divisor and unit a metric is shown in: bytes as MiB, the rest as measured."""
    return (2.0**20, "MiB") if unit == "bytes" else (1.0, unit)


def format_value(value: float, unit: str) -> str:
    divisor, shown = display_scale(unit)
    scaled = value / divisor
    text = f"{scaled:,.0f}" if abs(scaled) >= 1000 else f"{scaled:.4g}"
    return f"{text} {shown}" if divisor != 1.0 else text


def _fmt_change(change: MetricChange) -> str:
    return "from 0" if change.change_pct is None else f"{change.change_pct:+.1f}%"


def _change_rows(cells: list[CellComparison], verdict: str) -> list[list[str]]:
    rows = []
    for cell in cells:
        for change in cell.changes:
            if change.verdict == verdict:
                rows.append(
                    [
                        escape_md(cell.host),
                        f"{escape_md(cell.label)} `{cell.cell_id}`",
                        f"{change.metric}{' ⚠ unstable' if cell.unstable else ''}",
                        format_value(change.baseline, change.unit),
                        format_value(change.current, change.unit),
                        _fmt_change(change),
                        f"{change.threshold_pct:g}%",
                        escape_md(change.test),
                    ]
                )
    return rows


CHANGE_HEADERS = ["host", "cell", "metric", "baseline", "current", "change", "threshold", "noise test"]


def headline(comparison: Comparison) -> str:
    if comparison.exit_code == EXIT_CANNOT_COMPARE:
        return f"cannot compare: {comparison.reason}"
    regressed = comparison.regressed_cells
    if regressed:
        return f"REGRESSION in {len(regressed)} of {len(comparison.cells)} cells"
    return f"no regression in {len(comparison.cells)} cells"


def to_markdown(comparison: Comparison) -> str:
    icon = {EXIT_OK: "✅", EXIT_REGRESSION: "❌", EXIT_CANNOT_COMPARE: "⚠️"}[comparison.exit_code]
    parts = [f"## bench compare: {icon} {escape_md(headline(comparison))}", ""]
    thresholds = ", ".join(
        [f"{comparison.default_threshold_pct:g}% by default"]
        + [f"{k} {v:g}%" for k, v in comparison.thresholds_pct.items()]
    )
    parts += [
        f"- baseline: {escape_md(', '.join(comparison.baseline) or '–')}",
        f"- current: {escape_md(', '.join(comparison.current) or '–')}",
        f"- cells matched by {comparison.match_rule}; threshold {thresholds}",
        f"- test: {comparison.test}",
        "",
    ]
    sections = [
        ("Regressions", "regression"),
        ("Within noise (not counted)", "within-noise"),
        ("Improvements", "improvement"),
    ]
    status_rows = [
        [escape_md(c.host), f"{escape_md(c.label)} `{c.cell_id}`", escape_md(c.status_regression)]
        for c in comparison.cells
        if c.status_regression
    ]
    if status_rows:
        parts += [
            "### Cells that stopped working",
            "",
            table(["host", "cell", "what changed"], status_rows),
            "",
        ]
    for title, verdict in sections:
        rows = _change_rows(comparison.cells, verdict)
        if rows:
            parts += [f"### {title}", "", table(CHANGE_HEADERS, rows), ""]
    unstable = [c for c in comparison.cells if c.unstable]
    if unstable:
        parts += [f"### Unstable cells (spread over {UNSTABLE_CV_PCT:g}% CV across repetitions)", ""]
        parts += [f"- {escape_md(c.label)} `{c.cell_id}` on {escape_md(c.host)}" for c in unstable] + [""]
    notes = list(comparison.notes)
    notes += [
        f"{c.label} [{c.cell_id}]: {n}"
        for c in comparison.cells
        for n in c.notes
        if not n.startswith("unstable")
    ]
    notes += [f"only in baseline: {name}" for name in comparison.only_in_baseline]
    notes += [f"only in current: {name}" for name in comparison.only_in_current]
    if notes:
        parts += ["### Notes", ""] + [f"- {escape_md(n)}" for n in notes] + [""]
    all_rows = _change_rows(comparison.cells, "unchanged")
    if all_rows:
        parts += [
            "<details><summary>Unchanged metrics</summary>",
            "",
            table(CHANGE_HEADERS, all_rows),
            "",
            "</details>",
            "",
        ]
    return "\n".join(parts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def to_json(comparison: Comparison) -> str:
    data = asdict(comparison)
    data["verdict"] = headline(comparison)
    data["regressions"] = [
        {
            "cell_id": c.cell_id,
            "host": c.host,
            "label": c.label,
            "status": c.status_regression,
            "metrics": [r.metric for r in c.regressions],
        }
        for c in comparison.regressed_cells
    ]
    return json.dumps(_json_safe(data), indent=2) + "\n"


# ------------------------------------------------------------------------------------------- CLI


"""`bench trend DIR`: each metric of each cell over time (one PNG per metric per cell) and a markdown index.

DIR is a history folder (`bench run --history DIR` writes DIR/<host>/<UTC time>.csv) or any folder of
result CSVs. A series is one cell on one machine (the matching keys of bench.results.select); its points
are the runs (a file is a run; its newest row of the cell counts), placed at the time the run started;
error bars are the standard deviation across repetitions where the row has one; unstable points (spread
over bench.stats.UNSTABLE_CV_PCT) are drawn as red crosses. A cell whose latest run did not measure it (failed,
timed out, skipped) says so, and its "latest" column names that outcome, not an older run's figure.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bench.compare.metrics import METRICS, METRICS_BY_NAME, Metric, format_value
from bench.errors import BenchError
from bench.report.document import Block, Code, Heading, Image, Inline, Paragraph, Strong, Table
from bench.report.markdown import render_markdown
from bench.results import read_results
from bench.results.select import CELL_KEY, MACHINE_KEY, newest_rows, row_label, run_started
from bench.stats import UNSTABLE_CV_PCT

SUMMARY_HEADERS = ["metric", "runs", "first", "latest", "vs previous run", "best"]


@dataclass
class TrendOutput:
    markdown: Path
    plots: list[Path]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def measured_runs(directory: Path, host: str | None = None) -> pd.DataFrame:
    """Per run, the newest row of each cell (any status), with a `run_time` (the run's start), oldest run first."""
    frame = read_results([directory])
    frame = newest_rows(frame.assign(run_time=run_started(frame)), per=("source_file",))
    if host is not None:
        frame = frame[frame["host"] == host]
    if not (frame["status"] == "ok").any():
        where = f" for host {host}" if host else ""
        raise BenchError(
            f"{directory}: no ok result rows{where} to plot (expected result CSVs, e.g. from `bench run --history DIR`)"
        )
    return frame.sort_values("run_time", kind="stable")


def plot_metric(series: pd.DataFrame, metric: Metric, title: str) -> bytes:
    """One metric of one cell over its runs, as PNG."""
    values = series[metric.column].astype(float).map(metric.scaled)
    times = series["run_time"]
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.add_subplot()
    spread = series[metric.spread].astype(float).fillna(0.0).map(metric.scaled) if metric.spread else None
    axes.errorbar(times, values, yerr=spread, marker="o", linestyle="-", capsize=3, label=metric.name)
    unstable = series["unstable"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    if unstable.any():
        axes.scatter(
            times[unstable],
            values[unstable],
            marker="x",
            color="red",
            s=80,
            zorder=3,
            label=f"unstable (CV > {UNSTABLE_CV_PCT:g}%)",
        )
        axes.legend(loc="best", fontsize="small")
    unit = metric.display_unit
    axes.set_ylabel(f"{metric.name} ({unit})" if unit else metric.name)
    axes.set_title(f"{title}\n{'higher' if metric.bigger_is_better else 'lower'} is better", fontsize="small")
    axes.grid(True, alpha=0.3)
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _summary_row(metric: Metric, values: pd.Series, latest_outcome: str = "") -> list[Inline]:
    """`latest_outcome`: the latest run's status when it did not measure the cell (then no figure is latest)."""
    latest, first = values.iloc[-1], values.iloc[0]
    best = values.max() if metric.bigger_is_better else values.min()
    previous = (
        f"{100.0 * (latest - values.iloc[-2]) / values.iloc[-2]:+.1f}%" if len(values) > 1 and values.iloc[-2] else "–"
    )
    return [
        metric.name,
        str(len(values)),
        format_value(first, metric.unit),
        latest_outcome or format_value(latest, metric.unit),
        "–" if latest_outcome else previous,
        format_value(best, metric.unit),
    ]


def _cell_blocks(series: pd.DataFrame, host: str, metrics: list[Metric]) -> list[Block]:
    """One cell on one machine: when, its latest run's outcome when that did not measure it, a summary table and a
    plot per measured metric (from the runs that measured it)."""
    series = series.drop_duplicates("run_time", keep="last")
    cell_id, label = str(series[CELL_KEY].iloc[-1]), row_label(series.iloc[-1])
    last = series.iloc[-1]
    outcome = "" if last["status"] == "ok" else str(last["status"])
    when = f"{series['run_time'].iloc[0]:%Y-%m-%d %H:%M} to {series['run_time'].iloc[-1]:%Y-%m-%d %H:%M} UTC"
    blocks: list[Block] = [
        Heading(3, label),
        Paragraph.of(
            "cell ", Code(cell_id), f", {len(series)} runs, {when}, machine ", Code(str(series[MACHINE_KEY].iloc[-1]))
        ),
    ]
    if outcome:
        reason = "" if pd.isna(last["reason"]) or not str(last["reason"]) else f": {last['reason']}"
        blocks.append(
            Paragraph.of(
                Strong(f"Latest run ({last['run_time']:%Y-%m-%d %H:%M} UTC): {outcome}{reason}."),
                " The figures below are from the runs that measured it.",
            )
        )
    series = series[series["status"] == "ok"]
    rows, images = [], []
    for metric in metrics:
        present = series[series[metric.column].notna()]
        if present.empty:
            continue
        filename = f"{_safe_name(host)}/{_safe_name(cell_id)}-{metric.name}.png"
        rows.append(_summary_row(metric, present[metric.column].astype(float), outcome))
        images.append(Image(filename, metric.name, plot_metric(present, metric, f"{label} on {host}")))
    if rows:
        blocks += [Table(SUMMARY_HEADERS, rows, [False] + [True] * 5), *images]
    return blocks


def write_trend(
    directory: Path, output: Path, metrics: tuple[str, ...] | None = None, host: str | None = None
) -> TrendOutput:
    frame = measured_runs(directory, host)
    chosen = [METRICS_BY_NAME[name] for name in metrics] if metrics else list(METRICS)
    blocks: list[Block] = [
        Heading(1, "Benchmark trend"),
        Paragraph.of(
            f"Results from {directory}: each metric of each cell over its runs "
            "(error bars: standard deviation across repetitions; red crosses: unstable runs)."
        ),
    ]
    for host_name, host_rows in frame.groupby("host", sort=True, dropna=False):
        blocks.append(Heading(2, str(host_name)))
        for _, series in host_rows.groupby([CELL_KEY, MACHINE_KEY], sort=False, dropna=False):
            blocks += _cell_blocks(series, str(host_name), chosen)
    plots = []
    for image in (b for b in blocks if isinstance(b, Image)):
        path = output.parent / image.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.png)
        plots.append(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_markdown(blocks, image_dir="."), encoding="utf-8")
    return TrendOutput(markdown=output, plots=plots)

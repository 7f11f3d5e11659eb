"""`bench trend DIR`: each metric of each cell over time (one PNG per metric per cell) and a markdown index.

DIR is a history folder (`bench run --history DIR` writes DIR/<host>/<UTC time>.csv) or any folder of
result CSVs. A series is one cell on one machine (cell_id + fingerprint); its points are the runs, placed at
the time the run started; error bars are the standard deviation across repetitions where the row has one;
unstable points (spread over 5% CV) are drawn as red crosses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from bench.compare import (
    METRICS,
    METRICS_BY_NAME,
    Metric,
    display_scale,
    escape_md,
    format_value,
    row_label,
    run_order,
    table,
)
from bench.errors import BenchError
from bench.results import read_results

SPREAD_COLUMNS = {"prefill_tok_s": "prefill_tok_s_std", "decode_tok_s": "decode_tok_s_std"}


@dataclass
class TrendOutput:
    markdown: Path
    plots: list[Path]


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def measured_runs(directory: Path, host: str | None = None) -> pd.DataFrame:
    """ok rows with a `run_time` (their run's start), oldest first."""
    frame = read_results([directory])
    frame = frame.assign(run_time=pd.to_datetime(run_order(frame), utc=True, format="ISO8601"))
    frame = frame[frame["status"] == "ok"]
    if host is not None:
        frame = frame[frame["host"] == host]
    if frame.empty:
        where = f" for host {host}" if host else ""
        raise BenchError(
            f"{directory}: no ok result rows{where} to plot (expected result CSVs, e.g. from "
            "`bench run --history DIR`)"
        )
    return frame.sort_values("run_time", kind="stable")


def plot_metric(series: pd.DataFrame, metric: Metric, title: str, path: Path) -> None:
    divisor, unit = display_scale(metric.unit)
    values = series[metric.column].astype(float) / divisor
    times = series["run_time"]
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.add_subplot()
    spread_column = SPREAD_COLUMNS.get(metric.name)
    spread = series[spread_column].astype(float).fillna(0.0) / divisor if spread_column else None
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
            label="unstable (CV > 5%)",
        )
        axes.legend(loc="best", fontsize="small")
    axes.set_ylabel(f"{metric.name} ({unit})" if unit else metric.name)
    axes.set_title(f"{title}\n{'higher' if metric.bigger_is_better else 'lower'} is better", fontsize="small")
    axes.grid(True, alpha=0.3)
    figure.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def _summary_row(metric: Metric, values: pd.Series, image: str) -> list[str]:
    latest, first = values.iloc[-1], values.iloc[0]
    best = values.max() if metric.bigger_is_better else values.min()
    previous = (
        f"{100.0 * (latest - values.iloc[-2]) / values.iloc[-2]:+.1f}%"
        if len(values) > 1 and values.iloc[-2]
        else "–"
    )
    return [
        f"[{metric.name}]({image})",
        str(len(values)),
        format_value(first, metric.unit),
        format_value(latest, metric.unit),
        previous,
        format_value(best, metric.unit),
    ]


def write_trend(
    directory: Path, output: Path, metrics: tuple[str, ...] | None = None, host: str | None = None
) -> TrendOutput:
    frame = measured_runs(directory, host)
    chosen = [METRICS_BY_NAME[name] for name in metrics] if metrics else list(METRICS)
    parts = [
        "# Benchmark trend",
        "",
        f"Results from {escape_md(directory)}: each metric of each cell over its runs "
        "(error bars: standard deviation across repetitions; red crosses: unstable runs).",
        "",
    ]
    plots: list[Path] = []
    for host_name, host_rows in frame.groupby("host", sort=True, dropna=False):
        parts += [f"## {escape_md(host_name)}", ""]
        for (cell_id, fingerprint), series in host_rows.groupby(
            ["cell_id", "fingerprint"], sort=False, dropna=False
        ):
            series = series.drop_duplicates("run_time", keep="last")
            label = row_label(series.iloc[-1])
            parts += [
                f"### {escape_md(label)} `{cell_id}`",
                "",
                f"{len(series)} runs, {series['run_time'].iloc[0]:%Y-%m-%d %H:%M} to "
                f"{series['run_time'].iloc[-1]:%Y-%m-%d %H:%M} UTC, machine {escape_md(fingerprint)}",
                "",
            ]
            rows, images = [], []
            for metric in chosen:
                present = series[series[metric.column].notna()]
                if present.empty:
                    continue
                relative = Path(_safe_name(str(host_name))) / f"{_safe_name(str(cell_id))}-{metric.name}.png"
                plot_metric(present, metric, f"{label} on {host_name}", output.parent / relative)
                plots.append(output.parent / relative)
                rows.append(_summary_row(metric, present[metric.column].astype(float), relative.as_posix()))
                images.append(f"![{metric.name}]({relative.as_posix()})")
            if rows:
                parts += [table(["metric", "runs", "first", "latest", "vs previous run", "best"], rows), ""]
                parts += images + [""]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(parts), encoding="utf-8")
    return TrendOutput(markdown=output, plots=plots)


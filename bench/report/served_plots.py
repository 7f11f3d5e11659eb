"""The Served capacity curves: p-th percentile TTFT, time per output token and throughput against the arrival
rate, one line per setup (the knee shows where the tail climbs before the throughput stops rising)."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from bench.report import format as fmt
from bench.report.document import Image
from bench.report.plots import MAX_LEGEND, _colors, _margins, _png, plot_text
from bench.report.served import SETUP
from bench.suite import Slo

FILENAME = "served-capacity.png"


def served_figure(points: pd.DataFrame, slo: Slo) -> Figure | None:
    """Three panels (TTFT, TPOT, output tok/s vs arrival rate); the SLO's limits as dashed lines."""
    if points.empty:
        return None
    p = slo.percentile
    max_ttft, min_user = slo.limits()
    panels = (
        (f"ttft_ms_p{p}", f"TTFT p{p} (ms)", max_ttft),
        (f"tpot_ms_p{p}", f"time per output token p{p} (ms)", 1000.0 / min_user if min_user else None),
        ("decode_tok_s_mean", "output tok/s (all requests)", None),
    )
    series = (points["device"].astype(str) + " · " + points[SETUP].astype(str)).rename("series")
    labels = sorted(series.unique())
    colors = _colors(labels)
    figure = Figure(figsize=(12.0, 4.2))
    _margins(figure, left=0.7, bottom=1.3, top=0.5, wspace=0.35)
    for position, (column, label, limit) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        for name in labels:
            members = points[series == name].sort_values("arrival_rps")
            axes.plot(
                fmt.as_float(members["arrival_rps"]),
                fmt.as_float(members[column]),
                marker="o",
                markersize=4,
                color=colors[name],
                label=plot_text(name),
            )
        if limit is not None:
            axes.axhline(limit, color="0.4", linestyle="--", linewidth=1, label="_slo")
        axes.set_xlabel("arrival rate (requests/s)", fontsize=8)
        axes.set_ylabel(label, fontsize=8)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
    if len(labels) <= MAX_LEGEND:
        handles, names = figure.axes[0].get_legend_handles_labels()
        figure.legend(handles, names, fontsize=8, loc="lower center", ncols=min(3, len(labels)))
    figure.suptitle(f"Served load: p{p} latency and throughput against the arrival rate (dashed: the SLO)", fontsize=10)
    return figure


def served_plot(points: pd.DataFrame, slo: Slo) -> Image | None:
    figure = served_figure(points, slo)
    if figure is None:
        return None
    return Image(FILENAME, "TTFT, time per output token and throughput against the arrival rate", _png(figure))

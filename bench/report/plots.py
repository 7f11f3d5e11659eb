"""PNG plots (matplotlib, Agg: no display needed) returned as report Image blocks.

Figures are built with matplotlib.figure.Figure directly (no pyplot global state). Text taken from
the data is escaped for matplotlib's mathtext, so a `$` in a model name is printed, not parsed.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from bench.report import format as fmt
from bench.report.derived import unstable
from bench.report.document import Block, Image
from bench.report.users import USER_DECODE, sequences
from bench.results import samples_from_text
from bench.stats import UNSTABLE_CV_PCT

MAX_BAR_GROUPS = 30  # model × quantization rows in the device bar chart
MAX_PANELS = 3  # models in one Pareto figure, in one row (the table lists them all); a panel takes ~40 ms to draw
MAX_LEGEND = 12  # devices named in a legend
MAX_FRONT_LABELS = 8  # front points labelled per panel (each label is text to lay out and draw)
PANEL_TICKS = 3  # tick intervals per Pareto panel axis (MaxNLocator's nbins)
DPI = 100
MAX_SUSTAINED_PANELS = 4  # devices in the sustained figure, one panel each (the table lists every row)
MAX_SUSTAINED_LINES = 8  # setups drawn per panel
UNSTABLE_LABEL = f"unstable (spread > {UNSTABLE_CV_PCT:g} % CV)"


def plot_text(value: object) -> str:
    """Data text safe for matplotlib: `$` would start mathtext; newlines would stretch labels."""
    return " ".join(str(value).split()).replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # Margins are set by hand (_margins): a layout engine or bbox_inches="tight" would draw it twice.
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 3})
    return buffer.getvalue()


def _margins(
    figure: Figure,
    left: float,
    bottom: float,
    top: float,
    right: float = 0.25,
    wspace: float = 0.2,
    hspace: float = 0.2,
) -> None:
    """Margins in inches (labels, title, legend), converted to the figure fractions matplotlib wants."""
    width, height = figure.get_size_inches()
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=wspace,
        hspace=hspace,
    )


def _colors(labels: list[str]) -> dict[str, tuple[float, float, float, float]]:
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def _bar_boxes(lows: np.ndarray, widths: np.ndarray, height: float) -> np.ndarray:
    """Horizontal bars as polygons (one PolyCollection draws faster than hundreds of Rectangle patches)."""
    zeros = np.zeros_like(widths)
    return np.stack(
        [
            np.column_stack([zeros, lows]),
            np.column_stack([widths, lows]),
            np.column_stack([widths, lows + height]),
            np.column_stack([zeros, lows + height]),
        ],
        axis=1,
    )


def decode_spread(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(below, above) the mean for error bars: ± the standard deviation over repetitions, or the min–max of
    the per-repetition samples where a row has no standard deviation; 0 where it has neither."""
    mean = fmt.as_float(frame["decode_tok_s_mean"])
    std = fmt.as_float(frame["decode_tok_s_std"])
    samples = frame["decode_tok_s_samples"] if "decode_tok_s_samples" in frame else pd.Series("", index=frame.index)
    values = samples.where(std.isna(), "").map(samples_from_text)
    low = values.map(lambda v: min(v) if v else np.nan).astype(float)
    high = values.map(lambda v: max(v) if v else np.nan).astype(float)
    below = std.fillna(mean - low).clip(lower=0).fillna(0.0)
    above = std.fillna(high - mean).clip(lower=0).fillna(0.0)
    return below.to_numpy(), above.to_numpy()


def decode_by_device_figure(best: pd.DataFrame) -> Figure | None:
    """Grouped horizontal bars: decode tok/s of each device per model × quantization, with the spread over
    repetitions as error bars and unstable figures marked (as ⚠ marks them in the tables)."""
    frame = best.loc[fmt.as_float(best[USER_DECODE]).notna()]
    if frame.empty:
        return None
    group_label = frame["model_id"].astype(str) + " " + frame["quantization"].astype(str)
    if frame["backend"].nunique() > 1:
        group_label = group_label + " " + frame["backend"].astype(str)
    frame = frame.assign(
        _group=group_label,
        _bits=-fmt.as_float(frame["bits_per_weight"]),
        _decode=fmt.as_float(frame[USER_DECODE]),
    )
    ordered = frame.sort_values(["model_id", "_bits", "quantization"], na_position="last", kind="stable")
    groups = list(dict.fromkeys(ordered["_group"]))[:MAX_BAR_GROUPS]
    devices = sorted(frame["device"].unique())
    colors = _colors(devices)
    # One bar per group × device: its fastest row (several workloads may share a group).
    bars = (
        frame[frame["_group"].isin(groups)]
        .sort_values("_decode", ascending=False, kind="stable")
        .drop_duplicates(["_group", "device"])
    )
    group_no = bars["_group"].map({g: i for i, g in enumerate(groups)}).to_numpy()
    device_no = bars["device"].map({d: i for i, d in enumerate(devices)}).to_numpy()
    height = min(16.0, max(2.5, 0.35 * len(groups) * max(1, min(len(devices), 4)) + 1.2))
    label_inches = 0.085 * max(len(plot_text(g)) for g in groups) + 0.4
    named = devices if len(devices) <= MAX_LEGEND else []  # more colours than a legend can name: none named
    legend_inches = 0.07 * max([len(UNSTABLE_LABEL), *(len(plot_text(d)) for d in named)]) + 0.6
    figure = Figure(figsize=(8 + label_inches + legend_inches, height))
    _margins(figure, left=label_inches, bottom=0.6, top=0.45, right=legend_inches)
    axes = figure.add_subplot()
    bar = 0.8 / len(devices)
    lows = group_no + device_no * bar - bar / 2
    values = bars["_decode"].to_numpy()
    boxes = _bar_boxes(lows, values, bar)
    axes.add_collection(PolyCollection(boxes, facecolors=[colors[d] for d in bars["device"]], linewidths=0))
    below, above = decode_spread(bars)
    per_user = sequences(bars).to_numpy()  # per user: the aggregate's spread / N
    below, above = below / per_user, above / per_user
    axes.errorbar(
        values,
        lows + bar / 2,
        xerr=np.vstack([below, above]),
        fmt="none",
        ecolor="0.15",
        elinewidth=1,
        capsize=2,
    )
    right = float(np.nanmax(values + above))
    shaky = unstable(bars).to_numpy()
    # Unstable bars get a mark past their error bar (as ⚠ in the tables); markers draw faster than hatching.
    axes.plot(
        (values + above + 0.015 * right)[shaky],
        (lows + bar / 2)[shaky],
        linestyle="none",
        marker="X",
        markersize=5,
        color="0.15",
        label=UNSTABLE_LABEL,
    )
    axes.set_xlim(0, max(1.0, right * 1.07))
    axes.set_ylim(-0.5, len(groups) - 0.5 + bar * (len(devices) - 1))
    handles: list[Artist] = [Patch(color=colors[d], label=plot_text(d)) for d in named]
    if shaky.any():
        handles.append(Line2D([], [], linestyle="none", marker="X", color="0.15", label=UNSTABLE_LABEL))
    axes.set_yticks(np.arange(len(groups)) + bar * (len(devices) - 1) / 2, [plot_text(g) for g in groups])
    axes.invert_yaxis()
    spread = "± standard deviation over repetitions"
    if fmt.as_float(bars["decode_tok_s_std"]).isna().any():
        spread += " (min–max of the repetitions where none was recorded)"
    axes.set_xlabel(f"decode per user (tok/s, shallowest depth, fastest knob setting); error bars: {spread}")
    axes.grid(axis="x", alpha=0.3)
    # Beside the bars, not over them: placing a legend "best" among hundreds of bars is what drawing cost most.
    if handles:
        axes.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    title = "Decode speed by device"
    if frame["_group"].nunique() > len(groups):
        title += f" (first {len(groups)} model × quantization pairs)"
    if not named:
        title += f"; colours: {len(devices)} devices, see the tables"
    axes.set_title(title, y=1.0)
    return figure


def decode_by_device_plot(best: pd.DataFrame) -> Image | None:
    figure = decode_by_device_figure(best)
    if figure is None:
        return None
    return Image(
        "decode-by-device.png", "Decode tok/s per user, per device for each model and quantization", _png(figure)
    )


def pareto_plot(
    configs: pd.DataFrame, x: str, y: str, x_label: str, y_label: str, front: str, filename: str, title: str
) -> Image | None:
    """Scatter per model: every configuration, the Pareto-optimal ones joined and labelled."""
    needed = list(dict.fromkeys([x, y, front, "model_id", "device", "quantization", "knobs"]))
    frame = configs.loc[fmt.as_float(configs[x]).notna() & fmt.as_float(configs[y]).notna(), needed]
    if frame.empty:
        return None
    models = sorted(frame["model_id"].astype(str).unique())
    shown = models[:MAX_PANELS]
    columns = len(shown)
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(max(6.5, 4.6 * columns), 3.8 * rows + 1.2))  # wide enough for the title
    _margins(figure, left=0.75, bottom=1.0, top=0.85, wspace=0.35, hspace=0.5)
    devices = sorted(frame["device"].unique())
    colors = _colors(devices)
    for panel, model in enumerate(shown, start=1):
        axes = figure.add_subplot(rows, columns, panel)
        members = frame[frame["model_id"].astype(str) == model]
        on_front = members[front].fillna(False).astype(bool).to_numpy()
        point_colors = np.array([colors[d] for d in members["device"]]).reshape(-1, 4)
        xs, ys = fmt.as_float(members[x]).to_numpy(), fmt.as_float(members[y]).to_numpy()
        # Two scatter calls per panel (not one per device): thousands of configurations stay fast.
        axes.scatter(xs[on_front], ys[on_front], c=point_colors[on_front], s=36, zorder=3)
        axes.scatter(
            xs[~on_front],
            ys[~on_front],
            facecolors="none",
            edgecolors=point_colors[~on_front],
            s=36,
            zorder=2,
        )
        line = members[on_front].sort_values(x)
        axes.plot(line[x], line[y], color="0.3", linewidth=1, zorder=1)
        labels = line["quantization"].astype(str)
        if labels.duplicated().any():  # the same quantization twice on the front: tell them apart
            labels = (labels + " " + line["knobs"].astype(str)).str.strip()
        for label, px, py in list(zip(labels, line[x], line[y], strict=True))[:MAX_FRONT_LABELS]:
            axes.annotate(plot_text(label), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        _spread_small_values(axes, fmt.as_float(members[y]))
        axes.set_title(plot_text(model), fontsize=10, y=1.0)  # a fixed y skips a costly auto-placement
        axes.minorticks_off()
        # Few ticks: each tick is a label, a mark and a grid line to lay out and draw (most of a panel's cost).
        axes.xaxis.set_major_locator(MaxNLocator(PANEL_TICKS))
        if axes.get_yscale() == "linear":
            axes.yaxis.set_major_locator(MaxNLocator(PANEL_TICKS))
        axes.tick_params(labelsize=8)
        if panel > len(shown) - columns:  # axis titles on the outer panels only: text is what costs most
            axes.set_xlabel(x_label, fontsize=8)
        if (panel - 1) % columns == 0:
            axes.set_ylabel(y_label, fontsize=8)
        axes.grid(alpha=0.3)
    if len(devices) <= MAX_LEGEND:
        handles = [Line2D([], [], linestyle="none", marker="o", color=colors[d], label=plot_text(d)) for d in devices]
        figure.legend(handles=handles, fontsize=8, loc="lower center", ncols=min(4, len(devices)))
    suffix = f" (first {len(shown)} of {len(models)} models)" if len(models) > len(shown) else ""
    if len(devices) > MAX_LEGEND:
        suffix += f"; colours: {len(devices)} devices, see the table"
    figure.suptitle(f"{title}{suffix}\nfilled: on the front · hollow: dominated", fontsize=10)
    return Image(filename, title, _png(figure))


def _series(text: object) -> np.ndarray:
    return np.array(samples_from_text(text), dtype=float)


def sustained_figure(rows: pd.DataFrame) -> Figure | None:
    """One panel per device: decode tok/s per window (solid, left axis), temperature (dashed, right axis)."""
    if rows.empty:
        return None
    devices = sorted(rows["device"].astype(str).unique())[:MAX_SUSTAINED_PANELS]
    figure = Figure(figsize=(7.0, 2.9 * len(devices) + 0.9))
    _margins(figure, left=0.8, bottom=0.6, top=0.6, right=0.8, hspace=0.55)
    for panel, device in enumerate(devices, start=1):
        members = rows[rows["device"].astype(str) == device].head(MAX_SUSTAINED_LINES)
        colors = _colors(list(members["setup"].astype(str)))
        axes = figure.add_subplot(len(devices), 1, panel)
        temperature = axes.twinx()
        any_temperature = False
        for _, row in members.iterrows():
            t, speed, temp = (
                _series(row[c]) for c in ("sustain_t_s_samples", "sustain_tok_s_samples", "sustain_temp_c_samples")
            )
            color = colors[str(row["setup"])]
            axes.plot(t, speed, color=color, linewidth=1.5, label=plot_text(row["setup"]))
            if len(temp) == len(t) and not np.isnan(temp).all():
                temperature.plot(t, temp, color=color, linewidth=1, linestyle="--")
                any_temperature = True
        axes.set_title(plot_text(device), fontsize=10, y=1.0)
        axes.set_xlabel("decode time (s)", fontsize=8)
        axes.set_ylabel("decode (tok/s)", fontsize=8)
        axes.set_ylim(bottom=0)
        axes.tick_params(labelsize=8)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower left")
        if any_temperature:
            temperature.set_ylabel("temperature (°C), dashed", fontsize=8)
            temperature.tick_params(labelsize=8)
        else:
            temperature.set_yticks([])
            temperature.set_ylabel("no temperature sensor", fontsize=8)
    figure.suptitle("Sustained decode speed over time", fontsize=10)
    return figure


def sustained_plot(rows: pd.DataFrame) -> Image | None:
    figure = sustained_figure(rows)
    if figure is None:
        return None
    return Image("sustained.png", "Decode speed and temperature over a sustained run, per device", _png(figure))


def _spread_small_values(axes: object, values: pd.Series) -> None:
    """Quality losses span decades (KLD 0.001 .. 0.3): a symmetric log axis keeps the small ones apart."""
    positive = values[values > 0]
    if len(positive) and values.max() / positive.min() > 50:
        axes.set_yscale("symlog", linthresh=float(positive.min()))  # type: ignore[attr-defined]
        # Plain numbers: the default 10^x labels are mathtext, whose parser costs more than the whole plot.
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # type: ignore[attr-defined]


def write_images(blocks: list[Block], folder: Path) -> None:
    """Write the report's plots into `folder`, removing plots an earlier report left there."""
    images = {b.filename: b.png for b in blocks if isinstance(b, Image)}
    if folder.is_dir():
        for stale in folder.glob("*.png"):
            if stale.name not in images:
                stale.unlink()
    if not images:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        (folder / name).write_bytes(png)

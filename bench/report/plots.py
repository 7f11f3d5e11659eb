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
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from bench.report import format as fmt
from bench.report.document import Block, Image

MAX_BAR_GROUPS = 30  # model × quantization rows in the device bar chart
MAX_PANELS = 6  # models in one Pareto figure (the table lists them all)
MAX_LEGEND = 12  # devices named in a legend
DPI = 100


def plot_text(value: object) -> str:
    """Data text safe for matplotlib: `$` would start mathtext; newlines would stretch labels."""
    return " ".join(str(value).split()).replace("$", r"\$")


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # Margins are set by hand (_margins): a layout engine or bbox_inches="tight" would draw it twice.
    figure.savefig(
        buffer, format="png", dpi=DPI, metadata={"Software": None}, pil_kwargs={"compress_level": 3}
    )
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


def decode_by_device_plot(best: pd.DataFrame) -> Image | None:
    """Grouped horizontal bars: decode tok/s of each device, per model × quantization."""
    needed = ["decode_tok_s_mean", "model_id", "quantization", "backend", "bits_per_weight", "device"]
    frame = best.loc[fmt.as_float(best["decode_tok_s_mean"]).notna(), needed]
    if frame.empty:
        return None
    group_label = frame["model_id"].astype(str) + " " + frame["quantization"].astype(str)
    if frame["backend"].nunique() > 1:
        group_label = group_label + " " + frame["backend"].astype(str)
    frame = frame.assign(_group=group_label, _bits=-fmt.as_float(frame["bits_per_weight"]))
    ordered = frame.sort_values(["model_id", "_bits", "quantization"], na_position="last", kind="stable")
    groups = list(dict.fromkeys(ordered["_group"]))
    groups = groups[:MAX_BAR_GROUPS]
    devices = sorted(frame["device"].unique())
    colors = _colors(devices)
    table = frame.groupby(["_group", "device"])["decode_tok_s_mean"].max().unstack("device").reindex(groups)
    height = min(16.0, max(2.5, 0.35 * len(groups) * max(1, min(len(devices), 4)) + 1.2))
    label_inches = 0.085 * max(len(plot_text(g)) for g in groups) + 0.4
    figure = Figure(figsize=(8 + label_inches, height))
    _margins(figure, left=label_inches, bottom=0.6, top=0.45)
    axes = figure.add_subplot()
    bar = 0.8 / len(devices)
    positions = np.arange(len(groups))
    offsets = np.arange(len(devices))
    values = table.reindex(columns=devices).to_numpy(dtype=float)  # groups × devices
    # Every bar in one PolyCollection: one artist draws faster than hundreds of Rectangle patches.
    lows = (positions[:, None] + offsets[None, :] * bar - bar / 2).ravel()
    widths = np.nan_to_num(values.ravel())
    boxes = np.stack(
        [
            np.column_stack([np.zeros_like(widths), lows]),
            np.column_stack([widths, lows]),
            np.column_stack([widths, lows + bar]),
            np.column_stack([np.zeros_like(widths), lows + bar]),
        ],
        axis=1,
    )
    axes.add_collection(
        PolyCollection(
            boxes, facecolors=np.tile(np.array([colors[d] for d in devices]), (len(groups), 1)), linewidths=0
        )
    )
    axes.set_xlim(0, max(1.0, float(np.nanmax(values)) * 1.05))
    axes.set_ylim(-0.5, len(groups) - 0.5 + bar * (len(devices) - 1))
    handles = [Patch(color=colors[d], label=plot_text(d)) for d in devices[:MAX_LEGEND]]
    axes.set_yticks(positions + bar * (len(devices) - 1) / 2, [plot_text(g) for g in groups])
    axes.invert_yaxis()
    axes.set_xlabel("decode (tok/s, shallowest depth, fastest knob setting)")
    axes.grid(axis="x", alpha=0.3)
    axes.legend(handles=handles, fontsize=8, loc="best")
    title = "Decode speed by device"
    if len(frame["_group"].unique()) > len(groups):
        title += f" (first {len(groups)} model × quantization pairs)"
    axes.set_title(title, y=1.0)
    return Image(
        "decode-by-device.png", "Decode tok/s per device for each model and quantization", _png(figure)
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
    columns = min(3, len(shown))
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
        for label, px, py in list(zip(labels, line[x], line[y], strict=True))[:20]:
            axes.annotate(plot_text(label), (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        _spread_small_values(axes, fmt.as_float(members[y]))
        axes.set_title(plot_text(model), fontsize=10, y=1.0)  # a fixed y skips a costly auto-placement
        axes.minorticks_off()
        axes.xaxis.set_major_locator(MaxNLocator(5))  # fewer tick labels: text is what drawing costs
        axes.tick_params(labelsize=8)
        if panel > len(shown) - columns:  # axis titles on the outer panels only: text is what costs most
            axes.set_xlabel(x_label, fontsize=8)
        if (panel - 1) % columns == 0:
            axes.set_ylabel(y_label, fontsize=8)
        axes.grid(alpha=0.3)
    if len(devices) <= MAX_LEGEND:
        handles = [
            Line2D([], [], linestyle="none", marker="o", color=colors[d], label=plot_text(d)) for d in devices
        ]
        figure.legend(handles=handles, fontsize=8, loc="lower center", ncols=min(4, len(devices)))
    suffix = f" (first {len(shown)} of {len(models)} models)" if len(models) > len(shown) else ""
    if len(devices) > MAX_LEGEND:
        suffix += f"; colours: {len(devices)} devices, see the table"
    figure.suptitle(f"{title}{suffix}\nfilled: on the front · hollow: dominated", fontsize=10)
    return Image(filename, title, _png(figure))


def _spread_small_values(axes: object, values: pd.Series) -> None:
    """Quality losses span decades (KLD 0.001 .. 0.3): a symmetric log axis keeps the small ones apart."""
    positive = values[values > 0]
    if len(positive) and values.max() / positive.min() > 50:
        axes.set_yscale("symlog", linthresh=float(positive.min()))  # type: ignore[attr-defined]


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

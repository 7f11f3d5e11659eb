"""Section 4: Pareto fronts — quality loss vs decode speed, and vs memory; dominated options named."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.baseline import loss_label, lower_bound_note
from bench.report.data import QUALITY_LOSS_COLUMN
from bench.report.document import Block, Heading, Paragraph
from bench.report.plots import pareto_plot
from bench.report.sections import Column, frame_table, sort_configs
from bench.report.users import USER_DECODE

TITLE = "Pareto fronts"  # the section's heading (tests read the report's sections through it)


def _verdict(configs: pd.DataFrame, front: str, dominated: str) -> pd.Series:
    """'front', 'dominated by <setup> on <device>', or '–' when an axis was not measured."""
    names = configs["setup"] + " on " + configs["device"]
    by = configs[dominated]
    has_dominator = by.notna()
    dominator_names = names.reindex(by[has_dominator].astype("int64")).set_axis(by[has_dominator].index)
    text = pd.Series(fmt.MISSING, index=configs.index, dtype=object)
    text = text.where(~configs[front].astype(bool), "front")
    text.loc[has_dominator] = "dominated by " + dominator_names
    return text


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    configs = data.configs
    blocks: list[Block] = [Heading(2, TITLE)]
    if configs.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully.")]
    metric = data.quality_metric
    unit, divisor, decimals = fmt.bytes_unit(configs["memory_bytes"])
    memory_label = f"peak memory ({unit})"
    plotted = configs.assign(memory_unit=configs["memory_bytes"] / divisor)
    if metric is None:
        blocks.append(
            Paragraph.of(
                "Quality was not measured, so the front here is decode speed per user vs peak memory (faster and "
                "smaller is "
                "better). A configuration is dominated when another configuration of the same model is at "
                "least as "
                "fast and as small, and better on one of them."
            )
        )
        image = pareto_plot(
            plotted,
            USER_DECODE,
            "memory_unit",
            "decode per user (tok/s)",
            memory_label,
            "front_speed",
            "pareto-speed-memory.png",
            "Decode speed per user vs peak memory",
        )
        blocks += [image] if image is not None else []
        loss_column = None
    else:
        loss_column = QUALITY_LOSS_COLUMN[metric]
        label = loss_label(metric, configs)
        blocks.append(
            Paragraph.of(
                " ".join(
                    (
                        f"Quality loss is measured as {label} (lower is better), per model against its baseline "
                        "quantization, so fronts are drawn per model across every device and setting. A "
                        "configuration is dominated when another one of the same model is at least as good on both "
                        "axes and better on one.",
                        lower_bound_note(configs),
                    )
                ).strip()
            )
        )
        for front, x, x_label, name, title in (
            (
                "front_speed",
                USER_DECODE,
                "decode per user (tok/s)",
                "pareto-quality-speed.png",
                f"{label} vs decode speed per user",
            ),
            (
                "front_memory",
                "memory_unit",
                memory_label,
                "pareto-quality-memory.png",
                f"{label} vs peak memory",
            ),
        ):
            image = pareto_plot(plotted, x, loss_column, x_label, label, front, name, title)
            blocks += [image] if image is not None else []
    ordered = sort_configs(
        configs.assign(_off=~configs["front_speed"].astype(bool), _decode=-fmt.as_float(configs[USER_DECODE])),
        first=["model_id", "_off", "_decode", "device"],
    )
    columns = [
        Column("model", fmt.text(ordered["model_id"])),
        Column("device", ordered["device"]),
        Column("configuration", ordered["setup"]),
        Column("decode per user (tok/s)", fmt.fixed(ordered[USER_DECODE]), True),
        Column(memory_label, fmt.fixed(ordered["memory_bytes"] / divisor, decimals), True),
    ]
    if loss_column is not None:
        columns.append(Column(label, fmt.fixed(ordered[loss_column], 4 if metric == "kld" else 2), True))
        columns += [
            Column("speed front", _verdict(ordered, "front_speed", "dominated_speed")),
            Column("memory front", _verdict(ordered, "front_memory", "dominated_memory")),
        ]
    else:
        columns.append(Column("speed/memory front", _verdict(ordered, "front_speed", "dominated_speed")))
    on_any = ordered["front_speed"].astype(bool) | ordered["front_memory"].astype(bool)
    dominated = int((~on_any).sum())
    blocks.append(
        Paragraph.of(f"{int(on_any.sum())} configuration(s) on a front, {dominated} dominated (bold: on a front).")
    )
    blocks.append(frame_table(columns, strong_rows=on_any, strong_column="configuration"))
    return blocks

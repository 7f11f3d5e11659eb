"""Section 6: the best configuration per device and overall under the constraints, and why not the rest."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.baseline import loss_label
from bench.report.choose import CONSTRAINT_TEXT
from bench.report.data import QUALITY_LOSS_COLUMN
from bench.report.document import Block, Bullets, Code, Heading, Inline, Paragraph, Strong
from bench.report.economics import device_cost_table, missing_power
from bench.report.sections import Column, frame_table
from bench.report.sections.served import most_requests_paragraph
from bench.report.users import USER_DECODE

TITLE = "Recommendations"  # the section's heading (tests read the report's sections through it)


def _constraints(analysis: Analysis) -> list[Block]:
    declared = analysis.recommendation.constraints
    if not declared:
        where: tuple[Inline, ...] = (
            (" in this suite",)
            if analysis.data.suite is not None
            else (" (no suite given: pass ", Code("--suite SUITE.yaml"), ")")
        )
        return [
            Paragraph.of(
                "No constraints were declared",
                *where,
                ", so every measured configuration is eligible. Declare them under ",
                Code("constraints:"),
                " (min_decode_tok_s, max_kld, max_ppl_increase_pct, min_context, "
                "max_memory_gb, min_task_accuracy) to rule out options that are too slow, too lossy or too "
                "big.",
            )
        ]
    items = tuple(
        Paragraph.of(CONSTRAINT_TEXT[name].format(f"{value:g}"), " (", Code(name), ")")
        for name, value in declared.items()
    )
    return [
        Paragraph.of("Constraints declared in the suite — a configuration must meet all of them:"),
        Bullets(items),
    ]


def _costs(analysis: Analysis) -> list[Block]:
    data = analysis.data
    table = device_cost_table(data.configs, data.suite)
    table = table[table["declared"]].sort_values("device")
    if table.empty:
        return [
            Paragraph.of(
                "No device costs were declared (",
                Code("costs:"),
                " in the suite, by device id or "
                "HOST/DEVICE-ID): options are ranked by speed, and cost per million tokens is not shown.",
            )
        ]
    electricity = table["power_w"] / 1000.0 * table["electricity_usd_per_kwh"]
    columns = [
        Column("device", table["device"]),
        Column("price ($)", fmt.fixed(table["price_usd"], 0), True),
        Column("amortized over (years)", fmt.fixed(table["amortization_years"], 1), True),
        Column("utilization (%)", fmt.fixed(table["utilization"] * 100, 0), True),
        Column("power (W)", fmt.fixed(table["power_w"], 0), True),
        Column("electricity ($/kWh)", fmt.fixed(table["electricity_usd_per_kwh"], 3), True),
        Column("hardware ($/h)", fmt.fixed(table["hardware_usd_per_h"], 4), True),
        Column("electricity ($/h)", fmt.fixed(electricity, 4), True),
    ]
    blocks: list[Block] = [Heading(3, "Device costs"), frame_table(columns)]
    unpowered = missing_power(table)
    if not unpowered.empty:
        blocks.append(
            Paragraph.of(
                "⚠ No ",
                Code("power_w"),
                f" declared for {', '.join(unpowered['device'])}: its electricity is the GPU's measured board "
                "power where a row has one, and nothing on a CPU, so its cost per token reads low. Declare the "
                "whole system's draw as ",
                Code("power_w"),
                " under the suite's ",
                Code("costs:"),
                ".",
            )
        )
    return blocks


def _all_users(option: pd.Series) -> str:
    """', 65.4 tok/s for all 4 users' for a configuration serving several sequences at once; '' for one."""
    n = int(option["sequences"])
    return f", {option['decode_tok_s_mean']:,.1f} tok/s for all {n} users" if n > 1 else ""


def _option_columns(frame: pd.DataFrame, metric: str | None) -> list[Column]:
    unit, divisor, decimals = fmt.bytes_unit(frame["memory_bytes"])
    columns = [
        Column("device", frame["device"]),
        Column("configuration", frame["setup"]),
        Column("decode per user (tok/s)", fmt.fixed(frame[USER_DECODE]), True),
    ]
    if (frame["sequences"] > 1).any():
        columns.append(Column("decode, all users (tok/s)", fmt.fixed(frame["decode_tok_s_mean"]), True))
    columns += [
        Column(
            "slowest decode per user (tok/s @ depth)",
            fmt.fixed(frame["decode_worst"]) + " @" + fmt.integer(frame["decode_worst_depth"]),
            True,
        ),
    ]
    if metric is not None:
        column = QUALITY_LOSS_COLUMN[metric]
        label = loss_label(metric, frame)
        columns.append(Column(label, fmt.fixed(frame[column], 4 if metric == "kld" else 2), True))
    if frame["task_accuracy_pct"].notna().any():
        columns.append(Column("task acc. (%)", fmt.fixed(frame["task_accuracy_pct"], 1), True))
    columns += [
        Column(f"peak memory ({unit})", fmt.fixed(frame["memory_bytes"] / divisor, decimals), True),
        Column("usable context (tok)", fmt.integer(frame["usable_context"]), True),
    ]
    if frame["usd_per_mtok"].notna().any():
        cost = ("$" + fmt.fixed(frame["usd_per_mtok"], 3)).where(frame["usd_per_mtok"].notna(), fmt.MISSING)
        columns.append(Column("cost ($ per 1M tok)", cost, True))
    return columns


def build(analysis: Analysis) -> list[Block]:
    data, choice = analysis.data, analysis.recommendation
    blocks: list[Block] = [Heading(2, TITLE)]
    if data.configs.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully, so there is nothing to recommend.")]
    blocks += _constraints(analysis)
    blocks += _costs(analysis)
    best = choice.best
    table = choice.table
    eligible = int(table["eligible"].sum())
    if best is None:
        blocks.append(
            Paragraph.of(
                Strong("No configuration meets every constraint."),
                f" All {len(table)} are ruled out; the table below says by which constraint.",
            )
        )
    else:
        cost = f", ${best['usd_per_mtok']:,.3f} per million tokens" if pd.notna(best["usd_per_mtok"]) else ""
        blocks.append(
            Paragraph.of(
                "Best overall: ",
                Strong(f"{best['setup']} on {best['device']}"),
                f" — {best[USER_DECODE]:,.1f} tok/s decode per user{_all_users(best)}{cost}; {eligible} of "
                f"{len(table)} "
                "configurations "
                f"meet the constraints, ranked by {choice.ranking} (ties: lower quality loss, then lower "
                "memory).",
            )
        )
    if choice.most_users is not None:
        pick = choice.most_users
        blocks.append(
            Paragraph.of("Most users at the SLO: ", Strong(f"{pick.setup} on {pick.device}"), f" — {pick.reason}.")
        )
    elif not analysis.capacity.table.empty:
        blocks.append(
            Paragraph.of(
                "Most users at the SLO: none — no setup serves a user at the SLO at every measured depth with a "
                "configuration that meets the constraints (see Capacity)."
            )
        )
    blocks += most_requests_paragraph(analysis.served)
    metric = data.quality_metric
    if not choice.best_per_device.empty:
        per_device = choice.best_per_device
        blocks += [Heading(3, "Best per device"), frame_table(_option_columns(per_device, metric))]
        without = sorted(set(table["device"]) - set(per_device["device"]))
        if without:
            blocks.append(Paragraph.of(f"No configuration meets the constraints on: {', '.join(without)}."))
    ordered = table.assign(_unranked=table["rank"].isna()).sort_values(
        ["_unranked", "rank", "device", "setup"], kind="stable"
    )
    best_on_device = ordered.index.isin(choice.best_per_device.index)
    verdict = pd.Series("eligible, #" + fmt.integer(ordered["rank"]), index=ordered.index, dtype=object)
    verdict = verdict.where(~best_on_device, "best on its device, #" + fmt.integer(ordered["rank"]))
    verdict = verdict.where(ordered["rank"] != 1, "recommended")
    verdict = verdict.where(ordered["eligible"], "ruled out: " + ordered["reasons"])
    columns = [
        Column("rank", fmt.integer(ordered["rank"]), True),
        *_option_columns(ordered, metric),
        Column("verdict", verdict),
    ]
    blocks += [
        Heading(3, "Every option"),
        frame_table(columns, strong_rows=ordered["rank"] == 1, strong_column="configuration"),
    ]
    return blocks

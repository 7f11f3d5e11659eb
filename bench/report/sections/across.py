"""Section 3: for each model × quantization, the devices side by side (each at its setting fastest for one user)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.document import Block, Code, Heading, Inline, Paragraph, Table
from bench.report.plots import decode_by_device_plot
from bench.report.sections import Column, frame_table
from bench.report.users import USER_DECODE

TITLE = "Across devices"  # the section's heading (tests read the report's sections through it)

COMPARISON = ["model_id", "quantization", "backend", "prompt_tokens", "gen_tokens"]


def fastest_per_device(configs: pd.DataFrame) -> pd.DataFrame:
    """Each device's configuration fastest for one user (per-user decode) per model × quantization × backend ×
    workload: a batch of N users is faster in total, not for anyone in it."""
    ordered = configs.assign(_decode=fmt.as_float(configs[USER_DECODE])).sort_values(
        ["_decode", "device", "setup"], ascending=[False, True, True], na_position="last", kind="stable"
    )
    return ordered.drop_duplicates([*COMPARISON, "device"]).drop(columns="_decode")


def _title(first: dict[str, object], show_backend: bool, show_workload: bool) -> str:
    parts = [str(first["model_id"]), str(first["quantization"])]
    if show_backend:
        parts.append(str(first["backend"]))
    if show_workload:
        parts.append(f"pp{int(first['prompt_tokens'])} tg{int(first['gen_tokens'])}")
    return " · ".join(parts)


def comparison_tables(best: pd.DataFrame) -> list[Block]:
    """A heading and a table per model × quantization (× backend, × workload when those vary)."""
    show_backend = best["backend"].nunique() > 1
    show_workload = best[["prompt_tokens", "gen_tokens"]].drop_duplicates().shape[0] > 1
    ordered = best.assign(
        _bits=-fmt.as_float(best["bits_per_weight"]), _decode=-fmt.as_float(best[USER_DECODE])
    ).sort_values(
        ["model_id", "_bits", "quantization", "backend", "prompt_tokens", "gen_tokens", "_decode", "device"],
        na_position="last",
        kind="stable",
    )
    comparison = ordered.groupby(COMPARISON, sort=False, dropna=False).ngroup().to_numpy()
    decode = fmt.as_float(ordered[USER_DECODE])
    fastest = decode.groupby(comparison).transform("max")
    tok_per_j = fmt.fixed(ordered["tok_per_j"])
    tok_per_j = tok_per_j.where(~ordered["tok_per_j_estimated"].fillna(False).astype(bool), tok_per_j + " (est.)")
    cost = ("$" + fmt.fixed(ordered["usd_per_mtok"], 3)).where(ordered["usd_per_mtok"].notna(), fmt.MISSING)
    columns = [Column("device", ordered["device"])]
    if (ordered["knobs"] != "").any():
        columns.append(Column("settings", ordered["knobs"]))
    columns += [
        Column("decode per user (tok/s)", fmt.fixed(decode), True),
        Column("vs fastest (×)", fmt.fixed(decode / fastest, 2), True),
    ]
    if (ordered["sequences"] > 1).any():
        columns.append(Column("decode, all users (tok/s)", fmt.fixed(ordered["decode_tok_s_mean"]), True))
    columns += [
        Column("TTFT (ms)", fmt.fixed(ordered["ttft_ms_mean"]), True),
        Column("energy efficiency (tok/J)", tok_per_j, True),
        Column("cost ($ per 1M tok)", cost, True),
    ]
    table = frame_table(columns)  # formatted once; sliced per comparison below
    starts = np.flatnonzero(np.r_[True, comparison[1:] != comparison[:-1]])
    ends = np.r_[starts[1:], len(comparison)]
    firsts = ordered[["model_id", "quantization", "backend", "prompt_tokens", "gen_tokens"]].iloc[starts]
    blocks: list[Block] = []
    for first, start, end in zip(firsts.to_dict("records"), starts, ends, strict=True):
        blocks.append(Heading(3, _title(first, show_backend, show_workload)))
        blocks.append(Table(headers=table.headers, rows=table.rows[start:end], numeric=table.numeric))
    return blocks


def build(analysis: Analysis) -> list[Block]:
    configs = analysis.data.configs
    blocks: list[Block] = [Heading(2, TITLE)]
    if configs.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully.")]
    best = fastest_per_device(configs)
    devices = best["device"].nunique()
    notes: list[Inline] = [
        f"{devices} device{'s' if devices != 1 else ''} measured. For each model × quantization, "
        "every device at its knob setting fastest for one user (decode per user), fastest first; decode at the "
        "shallowest depth."
    ]
    if not best["tok_per_j"].notna().any():
        notes += [
            " Energy efficiency: no energy counter reported power for these devices and no ",
            Code("power_w"),
            " was declared.",
        ]
    if not best["usd_per_mtok"].notna().any():
        notes += [
            " Cost: no device costs were declared (give ",
            Code("costs:"),
            " in the suite and pass it with ",
            Code("--suite"),
            ").",
        ]
    blocks.append(Paragraph(tuple(notes)))
    image = decode_by_device_plot(best)
    if image is not None:
        blocks.append(image)
    return blocks + comparison_tables(best)

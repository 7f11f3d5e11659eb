"""Per device: the memory planner's estimate beside the memory measured for the same thing, per cell."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.derived import MEASURED_MEMORY_KINDS
from bench.report.document import Block, Heading, Paragraph
from bench.report.sections import Column, frame_table, knob_table_columns


def _kinds_note(kinds: pd.Series) -> str:
    present = [kind for kind in MEASURED_MEMORY_KINDS if kinds.eq(kind).any()]
    return "; ".join(f"{kind}: {MEASURED_MEMORY_KINDS[kind]}" for kind in present)


def memory_table(measured: pd.DataFrame, knobs: list[str], keep_all: bool = False) -> list[Block]:
    """Each cell with a planner estimate (rows in table order): estimate, measured, measured ÷ estimate
    ('–' when not like for like)."""
    estimated = measured["est_memory_bytes"].notna()
    if not estimated.any():
        return []
    rows = measured[estimated]
    unit, divisor, decimals = fmt.bytes_unit(pd.concat([rows["est_memory_bytes"], rows["measured_memory_bytes"]]))
    columns = [
        Column("model", fmt.text(rows["model_id"])),
        Column("quant", fmt.text(rows["quantization"])),
        *([Column("finished (UTC)", fmt.text(rows["finished_utc"]))] if keep_all else []),
        *knob_table_columns(rows, knobs),
        Column("depth (tok)", fmt.integer(rows["depth"]), True),
        Column(f"estimate ({unit})", fmt.fixed(rows["est_memory_bytes"] / divisor, decimals), True),
        Column(f"measured ({unit})", fmt.fixed(rows["measured_memory_bytes"] / divisor, decimals), True),
        Column("measured is", rows["measured_memory_kind"]),
        Column("measured / estimate (×)", fmt.fixed(rows["measured_vs_estimate"], 2), True),
    ]
    note = Paragraph.of(
        "The memory planner's estimate (weights + KV cache + compute buffers, on the memory that limits the "
        "cell) beside what was measured for the same thing — " + _kinds_note(rows["measured_memory_kind"]) + "."
    )
    return [Heading(4, "Memory: planner estimate vs measured"), note, frame_table(columns)]

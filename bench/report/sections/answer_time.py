"""Section "Time to answer": seconds to generate each thinking budget after the prompt, per setup, with where the
figure reaches past what was measured (bench.report.answer_time computes it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.answer_time import answer_times, thinking_budgets
from bench.report.derived import NOISE_MARK
from bench.report.document import Block, Code, Heading, Paragraph
from bench.report.sections import Column, frame_table, sort_configs
from bench.report.sections.capacity import setup_label_columns

TITLE = "Time to answer"  # the section's heading (tests read the report's sections through it)

BEYOND_MARK = " ↗"


def _notes(table: pd.DataFrame, budgets: list[int]) -> pd.Series:
    """Per row: one decode context measured, starting before the shallowest, and how far each budget reaches past
    the deepest measured one. Whole columns at a time."""
    empty = pd.Series("", index=table.index, dtype=object)
    one_depth = table["depth_count"] == 1
    first = empty.where(~one_depth, "one context measured (" + table["depths"] + "): its speed held at every context")
    below = table["starts_below"].astype(bool) & ~one_depth
    first = first.where(~below, "the prompt ends before the shallowest measured context: extended below it")
    beyond = empty
    for budget in budgets:
        past = (table[f"beyond_{budget}"] > 0) & ~one_depth
        text = f"{fmt.tokens(budget)} reaches " + fmt.integer(table[f"beyond_{budget}"]) + " tokens past it"
        beyond = beyond.where(~past, beyond + np.where(beyond != "", ", ", "") + text)
    deepest = "deepest measured context " + fmt.integer(table["deepest"]) + ": "
    beyond = (deepest + beyond + " (extrapolated)").where(beyond != "", "")
    return first + np.where((first != "") & (beyond != ""), "; ", "") + beyond


def answer_columns(table: pd.DataFrame, budgets: list[int], varying: list[str]) -> list[Column]:
    columns = [
        *setup_label_columns(table, varying),
        Column("prompt (tok)", fmt.integer(table["prompt_tokens"]), True),
        Column("decode contexts measured (tok)", table["depths"], True),
    ]
    noisy = table["noisy"].astype(bool)
    for budget in budgets:
        text = fmt.fixed(table[f"seconds_{budget}"])
        text = text.where(~(table[f"beyond_{budget}"] > 0), text + BEYOND_MARK)
        text = text.where(~noisy, text + NOISE_MARK)
        columns.append(Column(f"{fmt.tokens(budget)} tokens (s)", text, True))
    columns.append(Column("notes", _notes(table, budgets)))
    return columns


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    budgets = thinking_budgets(data.suite)
    blocks: list[Block] = [Heading(2, TITLE)]
    table = answer_times(data.measured, budgets, data.keep_all)
    if table.empty:
        return blocks + [Paragraph.of("No setup was measured with one sequence (parallel 1).")]
    source = "the suite's " if data.suite is not None else "the default "
    blocks.append(
        Paragraph.of(
            "How long one user waits for a reasoning model to think: the time to generate "
            + ", ".join(f"{b:,}" for b in budgets)
            + " tokens after the prompt (",
            source,
            Code("thinking_budgets"),
            "), from one sequence's decode speed at each context its decode was measured at (depth + prompt: "
            "decode follows the prompt; older rows: the depth), interpolated between them. "
            f"{BEYOND_MARK.strip()} the trace runs past the deepest measured context and the speed there is "
            f"extrapolated (the notes say by how much);{NOISE_MARK} a figure measured while the machine reported "
            "noise. Prompt processing is not included (see TTFT).",
        )
    )
    ordered = sort_configs(table, first=["device"])
    return blocks + [frame_table(answer_columns(ordered, budgets, data.knobs))]

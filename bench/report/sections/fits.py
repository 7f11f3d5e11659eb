"""Section 5: the largest context each device × model × quantization fits — the reasoning-model question.

Two figures, kept apart: what the device's memory allows (the backend's memory planner), and what is usable,
i.e. that capped at what the model supports (its trained context, or the RoPE-scaled limit its GGUF declares).
Memory for a million tokens is a property of the machine, not of the model (SmolLM2 on a 23.5 GiB machine: memory
for 1,041,408 tokens, trained for 8,192; tests/fixtures/report/golden/two-hosts/fits.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.context import CONTEXT_MARKS, memory_setup
from bench.report.document import Block, Heading, Inline, Paragraph, Strong
from bench.report.sections import Column, frame_table, knob_table_columns, sort_configs
from bench.suite.knobs import memory_knobs

TITLE = "What fits"  # the section's heading (tests read the report's sections through it)


def mark(largest: pd.Series, supported: pd.Series, tokens: int) -> pd.Series:
    """'yes', 'no', 'memory only' (fits, but beyond what the model supports) or '–' (unknown)."""
    fits = largest >= tokens
    text = pd.Series(np.where(fits, "yes", "no"), index=largest.index, dtype=object)
    text = text.where(~(fits & supported.notna() & (supported < tokens)), "memory only")
    return text.where(largest.notna(), fmt.MISSING)


def _bases(setups: pd.DataFrame) -> list[Inline]:
    """The planners' bases found in the data, emphasized: 'estimated', 'measured', ..."""
    bases = sorted(set(fmt.text(setups["context_basis"])) - {""})
    parts: list[Inline] = []
    for position, basis in enumerate(bases or ["no basis given"]):
        parts += ([", "] if position else []) + [Strong(basis)]
    return parts


def build(analysis: Analysis) -> list[Block]:
    configs = analysis.data.configs
    blocks: list[Block] = [Heading(2, TITLE)]
    if configs.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully.")]
    setups = sort_configs(configs, first=["device"]).drop_duplicates(memory_setup())
    marks = ", ".join(fmt.tokens(t) for t in CONTEXT_MARKS)
    has_rope = "n_ctx_rope_scaled" in setups and setups["n_ctx_rope_scaled"].notna().any()
    blocks.append(
        Paragraph.of(
            "Memory allows: the largest context per sequence (prompt + generated tokens in the KV cache) that "
            "fits the device's total memory, from the backend's memory planner (weights + KV cache + compute "
            "buffers); with N sequences decoded together (parallel N) they share one cache, each 1/N of it; "
            "the basis column says how the planner got it (",
            *_bases(setups),
            "). That is a property of the machine. Usable: the same, capped at what the model supports — its "
            "trained context"
            + (", or the RoPE-scaled limit its GGUF declares (scaling factor × original context)" if has_rope else "")
            + f". {marks} are the usual chat, long-document and reasoning lengths; 'memory only' means the "
            "memory fits but the model does not support that length.",
        )
    )
    largest = fmt.as_float(setups["max_context"])
    supported = fmt.as_float(setups["model_context"])
    usable = fmt.as_float(setups["usable_context"])
    columns = [
        Column("device", setups["device"]),
        Column("model", fmt.text(setups["model_id"])),
        Column("quant", fmt.text(setups["quantization"])),
    ]
    if setups["backend"].nunique() > 1:
        columns.append(Column("backend", fmt.text(setups["backend"])))
    columns += knob_table_columns(setups, [k for k in memory_knobs() if k in analysis.data.knobs])
    columns.append(Column("trained context (tok)", fmt.integer(setups["n_ctx_train"]), True))
    if has_rope:
        columns.append(Column("RoPE-scaled limit (tok)", fmt.integer(setups["n_ctx_rope_scaled"]), True))
    columns += [
        Column("usable context (tok)", fmt.integer(usable), True),
        Column("memory allows (tok)", fmt.integer(largest), True),
        Column("basis", fmt.text(setups["context_basis"])),
    ]
    for tokens in CONTEXT_MARKS:
        columns.append(Column(f"fits {fmt.tokens(tokens)}", mark(largest, supported, tokens)))
    long_context = usable >= CONTEXT_MARKS[-1]
    blocks.append(frame_table(columns, strong_rows=long_context, strong_column="usable context (tok)"))
    return blocks

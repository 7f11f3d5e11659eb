"""Section 5: the largest context each device × model × quantization fits — the reasoning-model question."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.context import CONTEXT_MARKS, MEMORY_SETUP, PLANNER_MISSING
from bench.report.document import Block, Heading, Inline, Paragraph, Strong
from bench.report.sections import Column, frame_table, sort_configs
from bench.report.sections.devices import KNOB_HEADERS

if TYPE_CHECKING:
    from bench.report.build import Analysis

MEMORY_KNOBS = ("n_gpu_layers", "kv_cache_type", "flash_attn", "n_batch", "n_ubatch")


def mark(largest: pd.Series, trained: pd.Series, tokens: int) -> pd.Series:
    """'yes', 'no', 'memory only' (fits, but beyond the model's trained context) or '–' (unknown)."""
    fits = largest >= tokens
    text = pd.Series(np.where(fits, "yes", "no"), index=largest.index, dtype=object)
    text = text.where(~(fits & trained.notna() & (trained < tokens)), "memory only")
    return text.where(largest.notna(), fmt.MISSING)


def _bases(setups: pd.DataFrame) -> list[Inline]:
    """The planner's bases found in the data, emphasized: 'estimated', 'measured', ..."""
    bases = sorted(set(fmt.text(setups["context_basis"])) - {""})
    parts: list[Inline] = []
    for position, basis in enumerate(bases or ["no basis given"]):
        parts += ([", "] if position else []) + [Strong(basis)]
    return parts


def build(analysis: Analysis) -> list[Block]:
    configs = analysis.data.configs
    blocks: list[Block] = [Heading(2, "What fits")]
    if configs.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully.")]
    setups = sort_configs(configs, first=["device"]).drop_duplicates(list(MEMORY_SETUP))
    marks = ", ".join(fmt.tokens(t) for t in CONTEXT_MARKS)
    if analysis.planner_available:
        blocks.append(
            Paragraph.of(
                "The largest context (prompt + generated tokens in the KV cache) that fits each device's "
                "memory, from the memory planner (weights + KV cache + compute buffers against the device's "
                "total memory); the basis column says how the planner got it (",
                *_bases(setups),
                f"). {marks} are the usual chat, long-document and reasoning lengths; 'memory only' means "
                "the memory fits but the model was trained for a shorter context.",
            )
        )
        largest = fmt.as_float(setups["max_context"])
        basis = fmt.text(setups["context_basis"])
    else:
        blocks.append(
            Paragraph.of(
                f"No context estimates: {PLANNER_MISSING}. Shown instead: the context each configuration "
                "was actually "
                f"run with (it fits at least that much); {marks} marks are 'yes' only where a run that "
                "large succeeded."
            )
        )
        ran = analysis.data.measured.groupby("config_no")["n_ctx"].max()
        largest = fmt.as_float(setups["config_no"].map(ran))
        basis = pd.Series("measured (ran)", index=setups.index, dtype=object).where(largest.notna(), "")
    trained = fmt.as_float(setups["n_ctx_train"])
    columns = [
        Column("device", setups["device"]),
        Column("model", fmt.text(setups["model_id"])),
        Column("quant", fmt.text(setups["quantization"])),
    ]
    if setups["backend"].nunique() > 1:
        columns.append(Column("backend", fmt.text(setups["backend"])))
    for knob in MEMORY_KNOBS:
        if knob in analysis.data.knobs:
            values = fmt.text(setups[knob])
            columns.append(
                Column(KNOB_HEADERS[knob], values.replace("-1", "all") if knob == "n_gpu_layers" else values)
            )
    columns += [
        Column("trained context (tok)", fmt.integer(trained), True),
        Column("largest context (tok)", fmt.integer(largest), True),
        Column("basis", basis),
    ]
    for tokens in CONTEXT_MARKS:
        text = mark(largest, trained, tokens)
        if not analysis.planner_available:  # a run proves a lower bound only
            text = text.where(text != "no", "unknown")
        columns.append(Column(f"fits {fmt.tokens(tokens)}", text))
    long_context = (largest >= CONTEXT_MARKS[-1]) & ~(trained < CONTEXT_MARKS[-1])
    blocks.append(frame_table(columns, strong_rows=long_context, strong_column="largest context (tok)"))
    return blocks

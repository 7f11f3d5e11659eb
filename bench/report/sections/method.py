"""Section 7: how each figure was measured, the inputs, and an appendix of failed and skipped cells."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from bench.report import format as fmt
from bench.report.document import Block, Bullets, Code, Heading, Paragraph
from bench.report.economics import COST_FORMULA
from bench.report.sections import Column, frame_table, sort_configs
from bench.stats import UNSTABLE_CV_PCT

if TYPE_CHECKING:
    from bench.report.build import Analysis


def _values(frame: pd.DataFrame, column: str) -> str:
    values = fmt.as_float(frame[column]).dropna().drop_duplicates().sort_values()
    return ", ".join(f"{int(v):,}" for v in values) or fmt.MISSING


def _quality_inputs(measured: pd.DataFrame) -> list[Paragraph]:
    items = []
    texts = measured[measured["eval_text_sha256"] != ""].drop_duplicates(["eval_text_sha256", "eval_tokens"])
    for _, row in texts.sort_values("eval_text_sha256").iterrows():
        tokens = "" if fmt.is_missing(row["eval_tokens"]) else f" ({int(row['eval_tokens']):,} tokens)"
        items.append(
            Paragraph.of("Evaluation text sha256 ", Code(str(row["eval_text_sha256"])), tokens + ".")
        )
    baselines = (
        measured.loc[measured["baseline_quantization"] != "", "baseline_quantization"]
        .drop_duplicates()
        .sort_values()
    )
    if len(baselines):
        items.append(
            Paragraph.of(
                "Quality baseline quantization: " + ", ".join(baselines) + " (KLD, top-1 agreement "
                "and ΔPPL compare each quantization's next-token distributions with it)."
            )
        )
    tasks = measured[measured["task_name"] != ""].drop_duplicates(["task_name", "task_sha256"])
    for _, row in tasks.sort_values(["task_name", "task_sha256"], na_position="last").iterrows():
        items_text = "" if fmt.is_missing(row["task_items"]) else f", {int(row['task_items']):,} items"
        digest = "" if fmt.is_missing(row["task_sha256"]) else str(row["task_sha256"])
        items.append(
            Paragraph.of(f"Task {row['task_name']}{items_text}, sha256 ", Code(digest or fmt.MISSING), ".")
        )
    return items


def _bandwidth_note(measured: pd.DataFrame) -> str:
    sources = set(measured["bandwidth_source"].dropna()) - {""}
    described = {
        "probe": "the built-in RAM probe (multi-threaded copy of a 64 MiB buffer, best of 4, bytes read "
        "+ written)",
        "NVML peak": "the GPU's theoretical peak (memory bus width × clock, NVML)",
        "suite": "the suite's memory_bandwidth_gbs",
    }
    if not sources:
        return "no memory bandwidth was known, so no roofline is shown"
    return "bandwidth from " + "; ".join(described[s] for s in sorted(sources))


def failed_cells(rows: pd.DataFrame) -> list[Block]:
    bad = rows[rows["status"] != "ok"]
    blocks: list[Block] = [Heading(3, "Appendix: failed and skipped cells")]
    if bad.empty:
        return blocks + [Paragraph.of("None: every cell was measured.")]
    bad = bad.assign(
        device=fmt.text(bad["host"]).replace("", "unknown host") + " / " + fmt.text(bad["device_id"])
    )
    ordered = sort_configs(bad, first=["status", "device"])
    columns = [
        Column("status", fmt.text(ordered["status"])),
        Column("device", ordered["device"]),
        Column("model", fmt.text(ordered["model_id"])),
        Column("quant", fmt.text(ordered["quantization"])),
        Column("backend", fmt.text(ordered["backend"])),
        Column("threads", fmt.text(ordered["threads"]), True),
        Column("depth (tok)", fmt.integer(ordered["depth"]), True),
        Column("reason", fmt.text(ordered["reason"])),
    ]
    return blocks + [frame_table(columns)]


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    measured = data.measured
    blocks: list[Block] = [Heading(2, "Method")]
    workload = Paragraph.of(
        f"Workload: prompt {_values(measured, 'prompt_tokens')} tokens, {_values(measured, 'gen_tokens')} "
        "generated "
        f"tokens, at depths {_values(measured, 'depth')} (tokens already in the KV cache); "
        f"{_values(measured, 'repetitions')} measured repetitions after {_values(measured, 'warmup')} "
        "warm-up(s), "
        "warm-ups kept apart."
    )
    items = [
        workload,
        Paragraph.of(
            "Prefill tok/s = prompt tokens / time to process them after the depth's cached tokens; decode "
            "tok/s = generated tokens / time of the one-token steps starting at that depth; TTFT = prefill "
            "+ first "
            "token; inter-token latency percentiles over every decode step of every repetition; the device "
            "is synchronized before each clock stop. Random token ids, as llama-bench uses."
        ),
        Paragraph.of(
            f"± is the standard deviation over repetitions; ⚠ marks a coefficient of variation above "
            f"{UNSTABLE_CV_PCT:g} %. Headline decode figures (Across devices, Pareto, Recommendations) "
            "are at each configuration's shallowest depth; the decode constraint checks the slowest depth."
        ),
        Paragraph.of(
            "Peak memory: the worker process's peak resident set (RAM), reset per cell; on a GPU, the peak "
            "device memory the backend reports. Energy per token: the GPU's energy counter (NVML) over the "
            "decode phase; '(est.)' tokens per joule divide decode tok/s by the suite's declared power_w."
        ),
        Paragraph.of(
            "Decode efficiency: roofline tok/s = bandwidth / bytes read per token, where bytes per token ≈ "
            "weights + KV cache bytes per token × (depth + generated tokens / 2); "
            + _bandwidth_note(measured)
            + "."
        ),
        Paragraph.of(
            "Pareto fronts: per model, a configuration is dominated when another is at least as good on "
            "both axes and strictly better on one; the one named is the front point that dominates it."
        ),
        Paragraph.of(
            "Cost: " + COST_FORMULA + ". Power is the declared power_w (whole system) or, without it, the "
            "measured average device power."
        ),
        Paragraph.of(
            "Merging: "
            + (
                "every row of every file is kept (--keep-all)."
                if data.keep_all
                else "for each cell (same settings: cell_id) and host, only the newest result (by "
                "finish time) is kept."
            )
        ),
        *_quality_inputs(measured),
    ]
    blocks.append(Bullets(tuple(items)))
    blocks.append(Heading(3, "Inputs"))
    blocks.append(
        frame_table(
            [Column("file", data.sources["file"]), Column("rows", fmt.integer(data.sources["rows"]), True)]
        )
    )
    blocks += failed_cells(data.rows)
    return blocks

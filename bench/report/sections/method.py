"""Section 7: how each figure was measured, the inputs, and an appendix of failed and skipped cells."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.derived import BANDWIDTH_KINDS, BANDWIDTH_METHODS, CPU_READ_PROBE, NVML_PEAK, OLD_COPY_PROBE
from bench.report.document import Block, Bullets, Code, Heading, Paragraph
from bench.report.economics import COST_FORMULA
from bench.report.knobs import knob_label, varying_knobs
from bench.report.sections import Column, frame_table, sort_configs
from bench.report.synthetic import method_note
from bench.stats import UNSTABLE_CV_PCT

TITLE = "Method"  # the section's heading (tests read the report's sections through it)


def _values(frame: pd.DataFrame, column: str) -> str:
    values = fmt.as_float(frame[column]).dropna().drop_duplicates().sort_values()
    return ", ".join(f"{int(v):,}" for v in values) or fmt.MISSING


def _quality_inputs(measured: pd.DataFrame) -> list[Paragraph]:
    items = []
    texts = measured[measured["eval_text_sha256"] != ""].drop_duplicates(["eval_text_sha256", "eval_tokens"])
    for _, row in texts.sort_values("eval_text_sha256").iterrows():
        tokens = "" if fmt.is_missing(row["eval_tokens"]) else f" ({int(row['eval_tokens']):,} tokens)"
        items.append(Paragraph.of("Evaluation text sha256 ", Code(str(row["eval_text_sha256"])), tokens + "."))
    baselines = (
        measured.loc[measured["baseline_quantization"] != "", "baseline_quantization"].drop_duplicates().sort_values()
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
        items.append(Paragraph.of(f"Task {row['task_name']}{items_text}, sha256 ", Code(digest or fmt.MISSING), "."))
    return items


def _bandwidth_note(measured: pd.DataFrame) -> str:
    kinds = set(measured["bandwidth_source"].dropna()) - {""}
    if not kinds:
        return "no memory bandwidth was known, so no roofline is shown"
    described = {BANDWIDTH_KINDS[k]: text for k, text in BANDWIDTH_METHODS.items()}
    note = "bandwidth: " + "; ".join(f"{kind} = {described.get(kind, kind)}" for kind in sorted(kinds))
    measured_kinds = kinds & {BANDWIDTH_KINDS[CPU_READ_PROBE], BANDWIDTH_KINDS[OLD_COPY_PROBE]}
    if measured_kinds and BANDWIDTH_KINDS[NVML_PEAK] in kinds:
        note += (
            ". A percentage of a theoretical peak and a percentage of a measured bandwidth are not the same "
            "quantity: compare roofline percentages only between rows whose bandwidth is of the same kind"
        )
    return note


def failed_cells(rows: pd.DataFrame) -> list[Block]:
    bad = rows[rows["status"] != "ok"]
    blocks: list[Block] = [Heading(3, "Appendix: failed and skipped cells")]
    if bad.empty:
        return blocks + [Paragraph.of("None: every cell was measured.")]
    bad = bad.assign(device=fmt.text(bad["host"]).replace("", "unknown host") + " / " + fmt.text(bad["device_id"]))
    ordered = sort_configs(bad, first=["status", "device"])
    columns = [
        Column("status", fmt.text(ordered["status"])),
        Column("device", ordered["device"]),
        Column("model", fmt.text(ordered["model_id"])),
        Column("quant", fmt.text(ordered["quantization"])),
        Column("backend", fmt.text(ordered["backend"])),
        Column("settings", knob_label(ordered, varying_knobs(ordered))),
        Column("depth (tok)", fmt.integer(ordered["depth"]), True),
        Column("reason", fmt.text(ordered["reason"])),
    ]
    return blocks + [frame_table(columns)]


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    measured = data.measured
    blocks: list[Block] = [Heading(2, TITLE)]
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
            "tok/s = generated tokens / time of the one-token steps that follow the prompt (at depth + prompt "
            "cached tokens, as llama-batched-bench decodes; rows from an older bench decoded at the depth); TTFT = "
            "the prefill's time (the first token is sampled from the prefill's last logits); inter-token latency "
            "percentiles over every decode step of every repetition; the device is synchronized before each "
            "clock stop. Random token ids, as llama-bench uses."
        ),
        Paragraph.of(
            f"± is the standard deviation over repetitions; ⚠ marks a coefficient of variation above "
            f"{UNSTABLE_CV_PCT:g} %. Headline decode figures (Across devices, Pareto, Recommendations) "
            "are at each configuration's shallowest depth; the decode constraint checks the slowest depth. With "
            "N concurrent sequences (parallel N), decode per user is what each user gets and decode, all users "
            "the aggregate; the fastest decode, Across devices, Pareto fronts, the speed ranking and "
            "min_decode_tok_s use decode per user, and a configuration of N > 1 sequences is an option only "
            "where its users get the SLO at every measured depth."
        ),
        Paragraph.of(
            "Peak memory: the worker process's peak resident set (RAM, the whole process), reset per cell; "
            "on a GPU, the peak device memory the backend reports. Beside the planner's estimate, the measured "
            "figure is what loading the model added (peak minus the resident memory before loading) or, on a "
            "GPU, the peak device memory. Energy per token: the GPU's energy counter (NVML) over the "
            "decode phase; '(est.)' tokens per joule divide decode tok/s by the suite's declared power_w."
        ),
        Paragraph.of(
            "Decode efficiency: roofline tok/s (all users) = N × bandwidth / bytes read per decode step, where "
            "a step of N sequences reads the weights once and each sequence's KV cache: bytes per step ≈ weights "
            "+ N × KV cache bytes per token × (depth + prompt + generated tokens / 2; older rows: depth + "
            "generated tokens / 2). The weights exclude the "
            "token-embedding table (a decode step reads one row of it) unless the output head is that table "
            "(tied embeddings); rows from a bench that did not record this count the whole table. KV bytes per "
            "token are the backend's measured KV buffer (else the planner's estimate) over its context; "
            + _bandwidth_note(measured)
            + "."
        ),
        Paragraph.of(
            "Pareto fronts: per model, a configuration is dominated when another is at least as good on "
            "both axes and strictly better on one; the one named is the front point that dominates it."
        ),
        Paragraph.of(
            "Cost: " + COST_FORMULA + ". Power is the declared power_w (whole system) or, without it, each "
            "row's measured average device power (none on a CPU: the report warns)."
        ),
        Paragraph.of(
            "Capacity (burst): a setup (every setting but the number of concurrent sequences) at one depth meets "
            "the SLO with N sequences, all arriving together on an already cached depth, when the SLO's "
            "percentile (p99 unless the suite says otherwise) of each user's TTFT over the users and repetitions "
            "is at most max_ttft_ms and that percentile of each user's time per output token ((last token − first "
            "token) / (output tokens − 1)) is at most 1000 / min_user_tok_s ms (older rows without per-user "
            "samples: the whole prefill's TTFT and the time of every decode step); a row without those samples "
            "does not meet it. A larger N that failed, "
            "timed out or was skipped breaks it. Its capacity is the largest measured N such that it and every "
            "smaller measured N meet the SLO (a measurement where 4 fail and 16 pass counts 1). Cost at capacity "
            "is the cost formula above at the aggregate rates of those N users; the most-users pick takes each "
            "setup's fewest users over its measured depths."
        ),
        Paragraph.of(
            "Time to answer: the seconds to generate a thinking budget of B tokens after a prompt of P tokens, "
            "∫ dt over context positions P … P + B of the time per token, which is interpolated linearly in context "
            "between the one-sequence decode speeds (1 / tok/s) at the contexts their decodes started at (depth "
            "+ prompt; older rows: depth) and extended along the "
            "nearest segment beyond them (held constant when one depth was measured)."
        ),
        Paragraph.of(
            "Merging: "
            + (
                "every row of every file is kept (--keep-all)."
                if data.keep_all
                else "for each cell (same settings: cell_id) and host, only the newest result (by finish time) is kept."
            )
        ),
        *_quality_inputs(measured),
        *method_note(data.rows),
    ]
    blocks.append(Bullets(tuple(items)))
    blocks.append(Heading(3, "Inputs"))
    blocks.append(
        frame_table([Column("file", data.sources["file"]), Column("rows", fmt.integer(data.sources["rows"]), True)])
    )
    blocks += failed_cells(data.rows)
    return blocks

"""Section "Capacity": per setup and depth, the burst capacity (how many users arriving together meet the SLO),
and what a token costs there against the one-user figure (bench.report.capacity computes it)."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.capacity import describe_slo
from bench.report.data import served_by
from bench.report.derived import NOISE_MARK
from bench.report.document import Block, Code, Heading, Inline, Paragraph
from bench.report.knobs import knob_label
from bench.report.sections import Column, frame_table, sort_configs

TITLE = "Capacity"  # the section's heading (tests read the report's sections through it)


def setup_label_columns(frame: pd.DataFrame, varying: list[str]) -> list[Column]:
    """Device, model, quantization, backend and what served it (when several backends), the other knobs that vary (without `parallel`), and
    the workload when it varies: what tells the setups of a capacity or time-to-answer table apart."""
    columns = [
        Column("device", fmt.text(frame["device"])),
        Column("model", fmt.text(frame["model_id"])),
        Column("quant", fmt.text(frame["quantization"])),
    ]
    if frame["backend"].nunique() > 1:
        columns.append(Column("backend", fmt.text(frame["backend"])))
        columns.append(Column("served by", served_by(frame)))
    settings = knob_label(frame, [k for k in varying if k != "parallel" and k in frame])
    if (settings != "").any():
        columns.append(Column("settings", settings))
    if frame[["prompt_tokens", "gen_tokens"]].drop_duplicates().shape[0] > 1:
        workload = "pp" + fmt.integer(frame["prompt_tokens"]) + " tg" + fmt.integer(frame["gen_tokens"])
        columns.append(Column("workload", workload))
    return columns


def _users_text(table: pd.DataFrame) -> pd.Series:
    users = fmt.integer(table["capacity"])
    users = users.where(~table["all_meet"].astype(bool), "≥ " + users)
    return users.where(~table["noisy"].astype(bool), users + NOISE_MARK)


def _dollars(values: pd.Series) -> pd.Series:
    return ("$" + fmt.fixed(values, 3)).where(values.notna(), fmt.MISSING)


def capacity_columns(table: pd.DataFrame, varying: list[str], percentile: int) -> list[Column]:
    p = f"p{percentile}"
    columns = [
        *setup_label_columns(table, varying),
        Column("depth (tok)", fmt.integer(table["depth"]), True),
        Column("measured (sequences)", table["measured_n"], True),
        Column("burst capacity at the SLO (users)", _users_text(table), True),
        Column("what limits it", table["limit"]),
        Column(f"TTFT {p} (ms)", fmt.fixed(table["ttft_pct_at_capacity"], 0), True),
        Column(f"decode per user at {p} (tok/s)", fmt.fixed(table["user_tok_s_pct_at_capacity"]), True),
        Column("decode per user, mean (tok/s)", fmt.fixed(table["user_tok_s_at_capacity"]), True),
        Column("decode, all users (tok/s)", fmt.fixed(table["decode_at_capacity"]), True),
    ]
    if table["usd_per_hour"].notna().any():
        columns += [
            Column("cost at capacity ($ per 1M tok)", _dollars(table["usd_per_mtok_at_capacity"]), True),
            Column("cost at 1 user ($ per 1M tok)", _dollars(table["usd_per_mtok_one_user"]), True),
        ]
    return columns


def _intro(analysis: Analysis) -> Paragraph:
    capacity = analysis.capacity
    p = f"p{capacity.slo.percentile}"
    parts: list[Inline] = [
        "Burst capacity: how many users each setup serves at once at the service level ",
        describe_slo(capacity.slo),
        f" — {capacity.slo_source}. What is measured is a burst: all N requests (",
        Code("parallel"),
        " N) arrive together, and each one's context depth is already in the cache, as in a follow-up turn of a "
        "conversation (not a new conversation of that length; not requests arriving at random times). Per "
        "context depth: the largest measured N such that it and every smaller measured N meet the SLO, judged "
        f"on its percentile over every user of every repetition, not the mean: TTFT {p} (a user's first token "
        "comes when the prefill batch holding its prompt's end is done) and time per output token "
        f"{p} (its last token − its first token, over its tokens after the first: the wait for the other users' "
        "prompts counts); rows from an older bench without per-user samples: the whole prefill's TTFT and the "
        "time of every decode step. Decode follows each prompt. A larger N that failed, timed out or was skipped (e.g. as not fitting in "
        "memory) is the N that breaks it, with the reason. ≥ N: every measured N met it, and no larger N was "
        f"measured; 0: not even the fewest measured.{NOISE_MARK} a row that decides it was measured while the "
        "machine reported noise.",
    ]
    if capacity.table["usd_per_hour"].notna().any():
        parts.append(
            " Cost per million tokens at capacity divides the device's cost per hour (at that row's power) by "
            "every served user's generated tokens per second of device time (each request's prompt at the "
            "aggregate prefill rate plus its tokens at the aggregate decode rate); the one-user figure is the same "
            "device serving one sequence at that depth."
        )
    return Paragraph(tuple(parts))


def build(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = [Heading(2, TITLE)]
    table = analysis.capacity.table
    if table.empty:
        return blocks + [Paragraph.of("Nothing was measured successfully.")]
    blocks.append(_intro(analysis))
    if (table["measured_n"] == "1").all():
        blocks.append(
            Paragraph.of(
                "Only one sequence at a time was measured: add ",
                Code("parallel: [1, 4, 16]"),
                " under the suite's ",
                Code("knobs:"),
                " to see how many users each setup holds at once.",
            )
        )
    ordered = sort_configs(table, first=["device"])
    return blocks + [frame_table(capacity_columns(ordered, analysis.data.knobs, analysis.capacity.slo.percentile))]

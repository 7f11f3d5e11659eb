"""Section "Sustained speed and energy": burst vs sustained speed, the ratio, time to throttle, reasons and the
plot; then J per token and per answer, gross and net of idle, and cost per answer, with the energy's source."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.answer_time import thinking_budgets
from bench.report.derived import NOISE_MARK, noise_mark
from bench.report.document import Block, Code, Heading, Paragraph
from bench.report.plots import sustained_plot
from bench.report.sections import Column, frame_table, sort_configs
from bench.report.sections.capacity import setup_label_columns
from bench.report.sustained import energy_rows, per_answer, sustained_rows, throttle_text

TITLE = "Sustained speed and energy"


def _sustained(measured: pd.DataFrame, varying: list[str]) -> list[Block]:
    rows = sustained_rows(measured)
    if rows.empty:
        return [
            Heading(3, "Sustained"),
            Paragraph.of(
                "No cell ran the sustained mode (",
                Code("workload.sustain_s"),
                " or ",
                Code("bench run --sustain"),
                ").",
            ),
        ]
    rows = sort_configs(rows, first=["device"])
    columns = [
        *setup_label_columns(rows, varying),
        Column("depth (tok)", fmt.integer(rows["depth"]), True),
        Column("ran (s)", fmt.fixed(rows["sustain_s"], 0), True),
        Column("burst (tok/s)", fmt.fixed(rows["sustain_burst_tok_s"]), True),
        Column("sustained (tok/s)", fmt.fixed(rows["sustain_tok_s"]), True),
        Column("sustained / burst (×)", fmt.fixed(rows["sustain_ratio"], 3) + noise_mark(rows), True),
        Column("5 % below burst", throttle_text(rows["sustain_throttle_s"])),
        Column("throttle reasons", fmt.text(rows["sustain_throttle_reasons"])),
        Column("sensors not read", fmt.text(rows["sustain_sensors"])),
    ]
    blocks: list[Block] = [
        Heading(3, "Sustained"),
        Paragraph.of(
            "Each cell kept decoding for ",
            Code("workload.sustain_s"),
            " after its repetitions, its speed taken per window of decode time. Burst is the first window, "
            "sustained the median of the last third; a ratio under 1 is speed lost once the machine warmed up "
            "(a CPU at its boost clock, a GPU at its power or thermal limit). The time is when a window first "
            "fell 5 % below burst; the reasons are the throttle reasons the device reported in any window (NVML's "
            "clock-event reasons; a CPU's thermal-throttle count rising)."
            f"{NOISE_MARK} marks a cell measured while the machine reported noise, with how busy other processes "
            "kept it: a ratio then measures them as much as heat.",
        ),
        frame_table(columns),
    ]
    image = sustained_plot(rows)
    return blocks + ([image] if image is not None else [])


def _energy(measured: pd.DataFrame, varying: list[str], analysis: Analysis) -> list[Block]:
    rows = energy_rows(measured)
    if rows.empty:
        sources = [source for source in fmt.text(measured["energy_source"]).unique() if source]
        why = f" (the rows say: {'; '.join(sorted(sources))})" if len(sources) else ""
        return [Heading(3, "Energy"), Paragraph.of(f"No energy counter was read for any cell{why}.")]
    rows = sort_configs(rows, first=["device"])
    budgets = thinking_budgets(analysis.data.suite)
    answers = per_answer(rows, budgets, analysis.data.suite)
    columns = [
        *setup_label_columns(rows, varying),
        Column("depth (tok)", fmt.integer(rows["depth"]), True),
        Column("source", fmt.text(rows["energy_source"]).replace("", "not recorded (older bench)")),
        Column("power (W)", fmt.fixed(rows["avg_power_w"], 1), True),
        Column("idle (W)", fmt.fixed(rows["idle_power_w"], 1), True),
        Column("energy (J/tok)", fmt.fixed(rows["energy_j_per_decode_token"], 4), True),
        Column("net of idle (J/tok)", fmt.fixed(rows["energy_net_j_per_decode_token"], 4), True),
    ]
    for budget in budgets:
        label = fmt.tokens(budget)
        columns.append(Column(f"{label} answer (J)", fmt.fixed(answers[f"j_{budget}"], 1), True))
        columns.append(Column(f"{label} answer, net (J)", fmt.fixed(answers[f"net_j_{budget}"], 1), True))
        if answers[f"usd_{budget}"].notna().any():
            columns.append(Column(f"{label} answer ($)", fmt.fixed(answers[f"usd_{budget}"], 5), True))
    note = Paragraph.of(
        "Energy of the decode phase, from the counter named in source: nvml_board is the whole GPU board "
        "(GPU, its memory, power delivery); rapl_package the CPU package (cores, caches, memory controller), "
        "rapl_dram+package with its DRAM. Neither includes the rest of the machine (fans, disks, power supply "
        "losses). Gross figures include what the device draws at rest; net ones take out the idle power measured "
        "before the group's first cell, over the same decode time. An answer is a reasoning answer of the ",
        Code("thinking_budgets"),
        " tokens at the row's decode speed and depth; its cost is the device's $/h (",
        Code("costs"),
        ") over the answer's device time.",
    )
    return [Heading(3, "Energy"), note, frame_table(columns)]


def build(analysis: Analysis) -> list[Block]:
    measured, varying = analysis.data.measured, analysis.data.knobs
    return [Heading(2, TITLE), *_sustained(measured, varying), *_energy(measured, varying, analysis)]

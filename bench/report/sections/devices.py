"""Section 2: per device, every model × quantization × knob setting measured on it.

Every column is formatted once over all devices' rows (sorted by device, so each device is one contiguous
slice) and each device's tables are slices of it: a history with many devices costs one pass, not one per
device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report import knobs as knob_columns
from bench.report.analysis import Analysis
from bench.report.baseline import loss_label, lower_bound_note
from bench.report.data import served_by
from bench.report.derived import noise_mark, unstable
from bench.report.document import Block, Code, Heading, Paragraph
from bench.report.sections import Column, frame_table, present, sort_configs
from bench.report.sections.memory import memory_table
from bench.report.users import USER_DECODE
from bench.stats import UNSTABLE_CV_PCT

TITLE = "Per device"  # the section's heading (tests read the report's sections through it)

QUALITY_FIELDS = (  # column, header, decimals
    ("ppl", "PPL", 3),
    ("dppl_pct", "ΔPPL (%)", 2),
    ("kld", "KLD", 4),
    ("top1_agreement_pct", "top-1 agree (%)", 1),
    ("task_accuracy_pct", "task acc. (%)", 1),
)
BYTE_COLUMNS = ("model_file_bytes", "peak_rss_bytes", "peak_vram_bytes")


def decode_by_depth(measured: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: 'mean ± std' decode text at each depth (columns = depths, ascending)."""
    if measured.empty:
        return pd.DataFrame()
    text = fmt.plus_minus(measured["decode_tok_s_mean"], measured["decode_tok_s_std"])
    text = text.where(~unstable(measured), text + " ⚠")
    text = text + noise_mark(measured)
    cells = pd.DataFrame(
        {"config_no": measured["config_no"], "depth": fmt.as_float(measured["depth"]).fillna(0), "text": text}
    )
    return (
        cells.drop_duplicates(["config_no", "depth"], keep="last")
        .set_index(["config_no", "depth"])["text"]
        .unstack("depth")
        .sort_index(axis=1)
    )


def device_slices(devices: pd.Series) -> dict[str, slice]:
    """Device -> its rows, for a frame sorted by device (each device one contiguous run of rows)."""
    values = devices.to_numpy()
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else np.array([], int)
    ends = np.r_[starts[1:], len(values)]
    return {str(values[s]): slice(int(s), int(e)) for s, e in zip(starts, ends, strict=True)}


@dataclass
class _Texts:
    """Display text of every column a device table may show, for all rows at once (sliced per device)."""

    frame: pd.DataFrame
    columns: dict[str, pd.Series] = field(default_factory=dict)

    def text(self, name: str) -> pd.Series:
        if name not in self.columns:
            self.columns[name] = fmt.text(self.frame[name])
        return self.columns[name]

    def knob(self, name: str) -> pd.Series:
        key = f"knob:{name}"
        if key not in self.columns:
            self.columns[key] = knob_columns.knob_text(self.frame, name)
        return self.columns[key]

    def fixed(self, name: str, decimals: int | None = None, divisor: float = 1.0) -> pd.Series:
        key = f"fixed:{name}:{decimals}:{divisor}"
        if key not in self.columns:
            self.columns[key] = fmt.fixed(fmt.as_float(self.frame[name]) / divisor, decimals)
        return self.columns[key]

    def byte_column(self, name: str, rows: slice) -> tuple[str, pd.Series]:
        """(unit, text) as fmt.byte_column would give for these rows alone: the unit follows their largest."""
        unit, divisor, decimals = fmt.bytes_unit(self.frame[name].iloc[rows])
        return unit, self.fixed(name, decimals, divisor).iloc[rows]


def _local_knobs(texts: _Texts, rows: slice) -> tuple[list[str], str]:
    """(knobs that vary on this device, 'threads 2, batch 2048, ...' for the ones every row shares)."""
    frame = texts.frame.iloc[rows]
    varying = knob_columns.varying_knobs(frame)
    shared = [
        f"{knob_columns.label(name)} {value}"
        for name in knob_columns.knob_names()
        if name not in varying and (value := texts.knob(name).iat[rows.start])
    ]
    return varying, ", ".join(shared)


def _knob_columns(texts: _Texts, rows: slice, knobs: list[str]) -> list[Column]:
    return [Column(knob_columns.label(n), texts.knob(n).iloc[rows], knob_columns.is_numeric(n)) for n in knobs]


def _any(values: pd.Series, rows: slice) -> bool:
    return bool(values.iloc[rows].notna().any())


def device_table(
    texts: _Texts, depths: pd.DataFrame, rows: slice, knobs: list[str], show_backend: bool, keep_all: bool
) -> list[Block]:
    frame = texts.frame
    columns = [
        Column("model", texts.text("model_id").iloc[rows]),
        Column("quant", texts.text("quantization").iloc[rows]),
    ]
    if keep_all:  # several runs of one configuration: tell them apart
        columns.append(Column("finished (UTC)", texts.text("finished_utc").iloc[rows]))
    if show_backend:
        columns.append(Column("backend", texts.text("backend").iloc[rows]))
        columns.append(Column("served by", served_by(frame).iloc[rows]))
    columns += _knob_columns(texts, rows, knobs)
    if frame["prompt_tokens"].iloc[rows].nunique() > 1 or frame["gen_tokens"].iloc[rows].nunique() > 1:
        columns += [
            Column("prompt (tok)", texts.fixed("prompt_tokens", 0).iloc[rows], True),
            Column("generated (tok)", texts.fixed("gen_tokens", 0).iloc[rows], True),
        ]
    for name, header in zip(BYTE_COLUMNS, ("file", "peak RAM, whole process", "peak VRAM"), strict=True):
        if name != "peak_vram_bytes" or _any(frame[name], rows):
            unit, values = texts.byte_column(name, rows)
            columns.append(Column(f"{header} ({unit})", values, True))
    first_depths = fmt.as_float(frame["depth"].iloc[rows]).fillna(0)
    at = f" @{int(first_depths.iloc[0]):,}" if first_depths.nunique() == 1 else ""
    if "prefill" not in texts.columns:
        texts.columns["prefill"] = fmt.plus_minus(frame["prefill_tok_s_mean"], frame["prefill_tok_s_std"])
    columns.append(Column(f"prefill{at} (tok/s)", texts.columns["prefill"].iloc[rows], True))
    several = bool((frame["sequences"].iloc[rows] > 1).any())  # then say whose speed each column is
    whose = ", all users" if several else ""
    for depth in depths.columns:
        values = depths[depth].iloc[rows]
        if values.notna().any():
            columns.append(Column(f"decode @{int(depth):,}{whose} (tok/s)", values.fillna(fmt.MISSING), True))
    if several:
        columns.append(Column(f"decode per user{at} (tok/s)", texts.fixed(USER_DECODE).iloc[rows], True))
    columns.append(Column(f"TTFT{at} (ms)", texts.fixed("ttft_ms_mean").iloc[rows], True))
    columns.append(Column("ITL p99 (ms)", texts.fixed("itl_ms_p99").iloc[rows], True))
    if _any(frame["energy_j_per_decode_token"], rows):
        columns.append(Column("energy (J/tok)", texts.fixed("energy_j_per_decode_token").iloc[rows], True))
    named = {"dppl_pct": loss_label("dppl", frame), "kld": loss_label("kld", frame)}  # the baseline, by name
    for column, header, decimals in QUALITY_FIELDS:
        header = named.get(column, header)
        if _any(frame[column], rows):
            columns.append(Column(header, texts.fixed(column, decimals).iloc[rows], True))
    return [frame_table(columns)]


def roofline_table(texts: _Texts, rows: slice, knobs: list[str], keep_all: bool) -> list[Block]:
    """The decode roofline of each measured row of the device that has one."""
    known = texts.frame["roofline_tok_s"].iloc[rows].notna().to_numpy()
    if not known.any():
        return [
            Paragraph.of(
                "Decode efficiency: memory bandwidth unknown for this device (give ",
                Code("memory_bandwidth_gbs"),
                " in the suite's device entry, or re-run with this version of bench, which probes RAM bandwidth).",
            )
        ]

    def pick(values: pd.Series) -> pd.Series:
        return values.iloc[rows][known]

    columns = [
        Column("model", pick(texts.text("model_id"))),
        Column("quant", pick(texts.text("quantization"))),
        *([Column("finished (UTC)", pick(texts.text("finished_utc")))] if keep_all else []),
        *[Column(c.header, c.values[known], c.numeric) for c in _knob_columns(texts, rows, knobs)],
        Column("depth (tok)", pick(texts.fixed("depth", 0)), True),
        Column("bandwidth (GB/s)", pick(texts.fixed("bandwidth_gbs", 1)), True),
        Column("bandwidth is", pick(texts.text("bandwidth_source"))),
        Column("sequences", pick(texts.fixed("sequences", 0)), True),
        Column("read per step (MiB)", pick(texts.fixed("bytes_per_step", None, fmt.MIB)), True),
        Column("roofline, all users (tok/s)", pick(texts.fixed("roofline_tok_s")), True),
        Column("decode, all users (tok/s)", pick(texts.fixed("decode_tok_s_mean")), True),
        Column("of roofline (%)", pick(texts.fixed("roofline_pct", 0)), True),
    ]
    why = Paragraph.of(
        "One decode step reads the weights once and each sequence's KV cache, and gives every sequence a token: "
        "the roofline of N sequences is N tokens per step at the bandwidth's step rate."
    )
    return [Heading(4, "Decode efficiency (memory-bandwidth roofline)"), why, frame_table(columns)]


def _intro(analysis: Analysis) -> list[Block]:
    data = analysis.data
    repetitions = ", ".join(fmt.text(data.measured["repetitions"].dropna().drop_duplicates().sort_values()))
    blocks: list[Block] = [
        Paragraph.of(
            "Each row is one configuration; ± is the standard deviation over the measured repetitions "
            f"({repetitions}); ⚠ marks a spread above {UNSTABLE_CV_PCT:g} % (coefficient of variation); ⚑ a "
            "figure measured while the machine reported noise (the row's system_warnings; see `bench hw`), with the "
            "share of the machine's CPU that other processes used while the cell ran (e.g. ⚑ 48% busy). "
            "Decode is measured at each depth (tokens already in the KV cache); prefill and TTFT at the "
            "shallowest."
        )
    ]
    if data.quality_metric is None and not present(data.configs, "task_accuracy_pct"):
        blocks.append(
            Paragraph.of(
                "Quality was not measured in these results (no PPL, KLD, top-1 agreement or task accuracy "
                "values); enable ",
                Code("quality:"),
                " in the suite to measure it.",
            )
        )
    elif note := lower_bound_note(data.configs):
        blocks.append(Paragraph.of(note))
    return blocks


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    blocks: list[Block] = [Heading(2, TITLE)]
    if data.configs.empty:
        return blocks + [Paragraph.of("No cell was measured successfully; see the appendix for the reasons.")]
    blocks += _intro(analysis)
    show_backend = data.configs["backend"].nunique() > 1
    configs = sort_configs(data.configs, first=["device"]).reset_index(drop=True)
    measured = sort_configs(data.measured, first=["device"]).reset_index(drop=True)
    depths = decode_by_depth(data.measured).reindex(configs["config_no"]).reset_index(drop=True)
    config_texts, measured_texts = _Texts(configs), _Texts(measured)
    measured_rows = device_slices(measured["device"])
    hardware = fmt.text(configs["gpu_name"].where(configs["device_kind"] == "cuda", configs["cpu_brand"]))
    for device, rows in device_slices(configs["device"]).items():
        name = hardware.iat[rows.start]
        blocks.append(Heading(3, f"{device} ({name})" if name else device))
        knobs, fixed = _local_knobs(config_texts, rows)
        if fixed:
            blocks.append(Paragraph.of(f"Settings shared by every row: {fixed}."))
        blocks += device_table(config_texts, depths, rows, knobs, show_backend, data.keep_all)
        own = measured_rows.get(device, slice(0, 0))
        blocks += roofline_table(measured_texts, own, knobs, data.keep_all)
        blocks += memory_table(measured.iloc[own], knobs, data.keep_all)
    return blocks

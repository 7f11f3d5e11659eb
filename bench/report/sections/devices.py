"""Section 2: per device, every model × quantization × knob setting measured on it."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report import knobs as knob_columns
from bench.report.analysis import Analysis
from bench.report.derived import unstable
from bench.report.document import Block, Code, Heading, Paragraph
from bench.report.sections import Column, frame_table, knob_table_columns, present, sort_configs
from bench.report.sections.memory import memory_table
from bench.stats import UNSTABLE_CV_PCT

QUALITY_FIELDS = (  # column, header, decimals
    ("ppl", "PPL", 3),
    ("dppl_pct", "ΔPPL (%)", 2),
    ("kld", "KLD", 4),
    ("top1_agreement_pct", "top-1 agree (%)", 1),
    ("task_accuracy_pct", "task acc. (%)", 1),
)


def decode_by_depth(measured: pd.DataFrame) -> pd.DataFrame:
    """Per configuration: 'mean ± std' decode text at each depth (columns = depths, ascending)."""
    if measured.empty:
        return pd.DataFrame()
    text = fmt.plus_minus(measured["decode_tok_s_mean"], measured["decode_tok_s_std"])
    text = text.where(~unstable(measured), text + " ⚠")
    cells = pd.DataFrame(
        {"config_no": measured["config_no"], "depth": fmt.as_float(measured["depth"]).fillna(0), "text": text}
    )
    return (
        cells.drop_duplicates(["config_no", "depth"], keep="last")
        .set_index(["config_no", "depth"])["text"]
        .unstack("depth")
        .sort_index(axis=1)
    )


def local_knobs(configs: pd.DataFrame) -> tuple[list[str], str]:
    """(knobs that vary on this device, 'threads 2, batch 2048, ...' for the ones every row shares)."""
    varying = knob_columns.varying_knobs(configs)
    return varying, knob_columns.shared_settings(configs, varying)


def device_table(
    configs: pd.DataFrame, depths: pd.DataFrame, knobs: list[str], show_backend: bool, keep_all: bool = False
) -> list[Block]:
    columns = [
        Column("model", fmt.text(configs["model_id"])),
        Column("quant", fmt.text(configs["quantization"])),
    ]
    if keep_all:  # several runs of one configuration: tell them apart
        columns.append(Column("finished (UTC)", fmt.text(configs["finished_utc"])))
    if show_backend:
        columns.append(Column("backend", fmt.text(configs["backend"])))
    columns += knob_table_columns(configs, knobs)
    if configs["prompt_tokens"].nunique() > 1 or configs["gen_tokens"].nunique() > 1:
        columns += [
            Column("prompt (tok)", fmt.integer(configs["prompt_tokens"]), True),
            Column("generated (tok)", fmt.integer(configs["gen_tokens"]), True),
        ]
    unit, size = fmt.byte_column(configs["model_file_bytes"])
    columns.append(Column(f"file ({unit})", size, True))
    unit, rss = fmt.byte_column(configs["peak_rss_bytes"])
    columns.append(Column(f"peak RAM, whole process ({unit})", rss, True))
    if present(configs, "peak_vram_bytes"):
        unit, vram = fmt.byte_column(configs["peak_vram_bytes"])
        columns.append(Column(f"peak VRAM ({unit})", vram, True))
    first_depths = fmt.as_float(configs["depth"]).fillna(0)
    at = f" @{int(first_depths.iloc[0]):,}" if first_depths.nunique() == 1 else ""
    columns.append(
        Column(
            f"prefill{at} (tok/s)",
            fmt.plus_minus(configs["prefill_tok_s_mean"], configs["prefill_tok_s_std"]),
            True,
        )
    )
    own_depths = depths.reindex(configs["config_no"])
    for depth in own_depths.columns:
        values = own_depths[depth]
        if values.notna().any():
            columns.append(
                Column(
                    f"decode @{int(depth):,} (tok/s)",
                    values.fillna(fmt.MISSING).set_axis(configs.index),
                    True,
                )
            )
    columns.append(Column(f"TTFT{at} (ms)", fmt.fixed(configs["ttft_ms_mean"]), True))
    columns.append(Column("ITL p99 (ms)", fmt.fixed(configs["itl_ms_p99"]), True))
    if present(configs, "energy_j_per_decode_token"):
        columns.append(Column("energy (J/tok)", fmt.fixed(configs["energy_j_per_decode_token"]), True))
    for column, header, decimals in QUALITY_FIELDS:
        if present(configs, column):
            columns.append(Column(header, fmt.fixed(configs[column], decimals), True))
    return [frame_table(columns)]


def roofline_table(measured: pd.DataFrame, knobs: list[str], keep_all: bool = False) -> list[Block]:
    """The decode roofline of each measured row (rows in table order: sort_configs)."""
    rows = measured[measured["roofline_tok_s"].notna()]
    if rows.empty:
        return [
            Paragraph.of(
                "Decode efficiency: memory bandwidth unknown for this device (give ",
                Code("memory_bandwidth_gbs"),
                " in the suite's device entry, or re-run with this version of bench, which probes RAM "
                "bandwidth).",
            )
        ]
    columns = [
        Column("model", fmt.text(rows["model_id"])),
        Column("quant", fmt.text(rows["quantization"])),
        *([Column("finished (UTC)", fmt.text(rows["finished_utc"]))] if keep_all else []),
        *knob_table_columns(rows, knobs),
        Column("depth (tok)", fmt.integer(rows["depth"]), True),
        Column("bandwidth (GB/s)", fmt.fixed(rows["bandwidth_gbs"], 1), True),
        Column("bandwidth is", rows["bandwidth_source"]),
        Column("read per token (MiB)", fmt.fixed(rows["bytes_per_token"] / fmt.MIB), True),
        Column("roofline (tok/s)", fmt.fixed(rows["roofline_tok_s"]), True),
        Column("decode (tok/s)", fmt.fixed(rows["decode_tok_s_mean"]), True),
        Column("of roofline (%)", fmt.fixed(rows["roofline_pct"], 0), True),
    ]
    return [Heading(4, "Decode efficiency (memory-bandwidth roofline)"), frame_table(columns)]


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    blocks: list[Block] = [Heading(2, "Per device")]
    if data.configs.empty:
        return blocks + [Paragraph.of("No cell was measured successfully; see the appendix for the reasons.")]
    repetitions = ", ".join(fmt.text(data.measured["repetitions"].dropna().drop_duplicates().sort_values()))
    blocks.append(
        Paragraph.of(
            "Each row is one configuration; ± is the standard deviation over the measured repetitions "
            f"({repetitions}); "
            f"⚠ marks a spread above {UNSTABLE_CV_PCT:g} % (coefficient of variation). Decode is measured "
            "at each "
            "depth (tokens already in the KV cache); prefill and TTFT at the shallowest."
        )
    )
    if data.quality_metric is None and not present(data.configs, "task_accuracy_pct"):
        blocks.append(
            Paragraph.of(
                "Quality was not measured in these results (no PPL, KLD, top-1 agreement or task accuracy "
                "values); "
                "enable ",
                Code("quality:"),
                " in the suite to measure it.",
            )
        )
    depths = decode_by_depth(data.measured)
    show_backend = data.configs["backend"].nunique() > 1
    configs = sort_configs(data.configs, first=["device"])
    measured = sort_configs(data.measured, first=["device"])
    measured_by_device = measured.groupby("device", sort=False).indices  # row positions, in table order
    for device, group in configs.groupby("device", sort=True):
        first = group.iloc[0]
        hardware = fmt.text(
            pd.Series([first["gpu_name"] if first["device_kind"] == "cuda" else first["cpu_brand"]])
        )[0]
        blocks.append(Heading(3, f"{device} ({hardware})" if hardware else str(device)))
        knobs, fixed = local_knobs(group)
        if fixed:
            blocks.append(Paragraph.of(f"Settings shared by every row: {fixed}."))
        blocks += device_table(group, depths, knobs, show_backend, data.keep_all)
        rows = measured.iloc[measured_by_device.get(device, [])]
        blocks += roofline_table(rows, knobs, data.keep_all)
        blocks += memory_table(rows, knobs, data.keep_all)
    return blocks

"""Section 1: the machines compared, the models and quantizations, when it was measured, and the headline."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.document import Block, Bullets, Heading, Paragraph, Strong
from bench.report.sections import Column, count_text, frame_table, present
from bench.report.users import USER_DECODE

TITLE = "Summary"  # the section's heading (tests read the report's sections through it)


def _joined(values: pd.Series) -> str:
    """Distinct non-empty values of a column, in order, ', '-joined (software versions over many runs)."""
    texts = fmt.text(values.dropna())
    return ", ".join(dict.fromkeys(t for t in texts if t))


def _joined_by_host(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per host and column: its distinct non-empty values in row order, ', '-joined (no per-host loop)."""
    joined = {}
    for column in columns:
        texts = pd.DataFrame({"host": rows["host"], "text": fmt.text(rows[column])})
        distinct = texts[texts["text"] != ""].drop_duplicates()  # keeps each value's first row
        joined[column] = distinct.groupby("host", sort=True)["text"].agg(", ".join)
    hosts = pd.Index(sorted(rows["host"].unique()), name="host")
    return pd.DataFrame(joined).reindex(hosts).fillna("")


def _stamps_by_host(rows: pd.DataFrame, column: str, how: str) -> pd.Series:
    """The earliest ('min') or latest ('max') ISO-8601 stamp per host ('' when none): ISO stamps sort as text."""
    return rows[column].where(rows[column] != "").groupby(rows["host"], sort=True).agg(how).fillna("")


def _earliest(stamps: pd.Series) -> str:
    """The earliest ISO-8601 UTC stamp ('' when none): ISO stamps sort as text."""
    known = stamps[stamps != ""]
    return str(known.min()) if len(known) else ""


def _latest(stamps: pd.Series) -> str:
    known = stamps[stamps != ""]
    return str(known.max()) if len(known) else ""


def _bandwidth_by_host(measured: pd.DataFrame) -> pd.Series:
    known = measured[measured["bandwidth_gbs"].notna()]
    if known.empty:
        return pd.Series(dtype=object)
    per_device = (
        known.groupby(["host", "device_id"], sort=True, dropna=False)
        .agg(gbs=("bandwidth_gbs", "median"), source=("bandwidth_source", "first"))
        .reset_index()
    )
    per_device["text"] = (
        fmt.text(per_device["device_id"])
        + " "
        + fmt.fixed(per_device["gbs"], 1)
        + " ("
        + per_device["source"].astype(str)
        + ")"
    )
    return per_device.groupby("host", dropna=False)["text"].agg("; ".join)


def machines_table(rows: pd.DataFrame, measured: pd.DataFrame) -> list[Block]:
    newest_first = rows.sort_values(["finished_utc", "started_utc"], ascending=False, na_position="last", kind="stable")
    hosts = newest_first[
        ["host", "cpu_physical_cores", "cpu_logical_cores", "ram_total_bytes", "gpu_vram_total_bytes"]
    ].groupby("host", sort=True, dropna=False)
    text_columns = [
        "cpu_brand",
        "gpu_name",
        "gpu_driver",
        "cuda_version",
        "os",
        "bench_version",
        "backend_software",
    ]
    versions = fmt.text(newest_first["backend_version"])
    software = (fmt.text(newest_first["backend"]) + " " + versions).where(versions != "", "")
    info = _joined_by_host(newest_first.assign(backend_software=software), text_columns)
    first = hosts.first()  # newest non-null value per column
    info["cores"] = fmt.integer(first["cpu_physical_cores"]) + " / " + fmt.integer(first["cpu_logical_cores"])
    info["ram"] = fmt.fixed(fmt.as_float(first["ram_total_bytes"]) / fmt.GIB, 1)
    info["vram"] = fmt.fixed(fmt.as_float(hosts["gpu_vram_total_bytes"].max()) / fmt.GIB, 1)
    info["bandwidth"] = _bandwidth_by_host(measured).reindex(info.index).fillna("")
    info["since"] = _stamps_by_host(newest_first, "started_utc", "min")
    info["until"] = _stamps_by_host(newest_first, "finished_utc", "max")
    driver = (info["gpu_driver"] + " / " + info["cuda_version"]).where(info["gpu_driver"] != "", "")
    host_names = pd.Series(info.index, index=info.index).map(lambda h: "unknown host" if fmt.is_missing(h) else h)
    columns = [
        Column("host", host_names),
        Column("CPU", info["cpu_brand"]),
        Column("cores (phys / logical)", info["cores"], True),
        Column("RAM (GiB)", info["ram"], True),
    ]
    if (info["gpu_name"] != "").any():
        columns += [
            Column("GPU", info["gpu_name"]),
            Column("VRAM (GiB)", info["vram"], True),
            Column("driver / CUDA", driver),
        ]
    columns += [
        Column("memory bandwidth (GB/s)", info["bandwidth"]),
        Column("OS", info["os"]),
        Column("bench", info["bench_version"]),
        Column("backends", info["backend_software"]),
        Column("first cell started (UTC)", fmt.text(info["since"])),
        Column("last cell finished (UTC)", fmt.text(info["until"])),
    ]
    return [Heading(3, "Machines"), frame_table(columns)]


def models_table(rows: pd.DataFrame) -> list[Block]:
    needed = [
        "model_id",
        "quantization",
        "model_file_bytes",
        "bits_per_weight",
        "arch",
        "model_source",
        "n_params",
        "n_layers",
        "n_kv_heads",
        "head_dim",
        "n_ctx_train",
    ]
    known = rows.loc[rows["model_id"] != "", needed]
    if known.empty:
        return []
    per_quant = (
        known.sort_values(["model_id", "quantization"], kind="stable")
        .groupby(["model_id", "quantization"], sort=True, dropna=False)
        .first()
        .reset_index()
    )
    size_unit, divisor, decimals = fmt.bytes_unit(per_quant["model_file_bytes"])
    sizes = fmt.fixed(fmt.as_float(per_quant["model_file_bytes"]) / divisor, decimals)
    per_quant["entry"] = fmt.text(per_quant["quantization"]) + (" " + sizes + " " + size_unit).where(
        sizes != fmt.MISSING, ""
    )
    per_quant["_bits"] = -fmt.as_float(per_quant["bits_per_weight"])
    ordered = per_quant.sort_values(["model_id", "_bits", "quantization"], na_position="last", kind="stable")
    models = ordered.groupby("model_id", sort=True, dropna=False)
    table = models[["arch", "model_source"]].agg(_joined)
    firsts = models.first()
    table["quants"] = models["entry"].agg("; ".join)
    params = fmt.as_float(firsts["n_params"])
    columns = [
        Column("model", pd.Series(table.index, index=table.index)),
        Column("architecture", table["arch"]),
        Column("parameters (M)", fmt.fixed(params / 1e6), True),
        Column("layers", fmt.integer(firsts["n_layers"]), True),
        Column(
            "KV heads × head size",
            fmt.integer(firsts["n_kv_heads"]) + " × " + fmt.integer(firsts["head_dim"]),
        ),
        Column("trained context (tok)", fmt.integer(firsts["n_ctx_train"]), True),
        Column("quantizations (file size)", table["quants"]),
        Column("source", table["model_source"]),
    ]
    return [Heading(3, "Models and quantizations"), frame_table(columns)]


def at_a_glance(analysis: Analysis) -> Bullets:
    data = analysis.data
    rows, configs = data.rows, data.configs
    hosts = sorted(set(rows["host"]) - {""})
    devices = configs["device"].nunique() if not configs.empty else 0
    quants = sorted(set(rows["quantization"]) - {""})
    items = [
        Paragraph.of(
            f"Compared: {count_text(len(hosts), 'machine')} ({', '.join(hosts)}), "
            f"{count_text(devices, 'device')}, "
            f"{count_text(rows['model_id'].nunique(), 'model')}, {count_text(len(quants), 'quantization')} "
            f"({', '.join(quants)})."
        )
    ]
    if not configs.empty and configs[USER_DECODE].notna().any():
        fastest = configs.loc[fmt.as_float(configs[USER_DECODE]).idxmax()]
        items.append(
            Paragraph.of(
                "Fastest decode for one user: ",
                Strong(f"{fastest['setup']} on {fastest['device']}"),
                f" at {fastest[USER_DECODE]:,.1f} tok/s per user (depth {int(fastest['depth']):,}).",
            )
        )
    best = analysis.recommendation.best
    if best is not None:
        items.append(
            Paragraph.of(
                "Recommended: ",
                Strong(f"{best['setup']} on {best['device']}"),
                f" (ranked by {analysis.recommendation.ranking}; see Recommendations).",
            )
        )
    elif not configs.empty:
        items.append(
            Paragraph.of(
                "Recommended: none — no configuration meets the declared constraints "
                "(see Recommendations for what rules each one out)."
            )
        )
    measured_quality = [
        label
        for column, label in (
            ("ppl", "perplexity"),
            ("kld_mean", "KL divergence"),
            ("top1_agreement_pct", "top-1 agreement"),
            ("task_accuracy_pct", "task accuracy"),
        )
        if present(configs, column)
    ]
    items.append(
        Paragraph.of(
            "Quality measured: " + ", ".join(measured_quality) + "."
            if measured_quality
            else "Quality was not measured (no perplexity, KLD or task columns in these results)."
        )
    )
    bad = rows[rows["status"] != "ok"]
    if not bad.empty:
        counts = bad["status"].value_counts().sort_index()
        items.append(
            Paragraph.of(
                "Not measured: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + " (see the appendix for reasons)."
            )
        )
    return Bullets(tuple(items))


def build(analysis: Analysis) -> list[Block]:
    data = analysis.data
    rows = data.rows
    since, until = _earliest(rows["started_utc"]), _latest(rows["finished_utc"])
    merged = "every result kept (--keep-all)" if data.keep_all else "the newest result per cell and machine kept"
    intro = (
        f"{count_text(data.input_rows, 'result row')} from {count_text(len(data.sources), 'file')}; "
        f"{merged}: {count_text(len(rows), 'row')}, measured between {since or '?'} and {until or '?'} (UTC)."
    )
    blocks: list[Block] = [
        Heading(1, "Benchmark report"),
        Paragraph.of(intro),
        Heading(2, TITLE),
        at_a_glance(analysis),
    ]
    blocks += machines_table(rows, data.measured)
    blocks += models_table(rows)
    return blocks

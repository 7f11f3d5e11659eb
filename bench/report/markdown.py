"""Markdown tables from a results frame."""
from __future__ import annotations

import math
from typing import Any

import pandas as pd


def escape_md(value: Any) -> str:
    """A value safe inside a markdown table cell: no pipes, newlines or HTML."""
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def fmt_num(value: Any, digits: int = 1) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):,.{digits}f}"


def fmt_mib(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value) / 2**20:,.0f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def build_markdown(frame: pd.DataFrame) -> str:
    parts = ["# Benchmark report", ""]
    parts += _machines(frame)
    ok = frame[frame["status"] == "ok"]
    for (host, device), group in ok.groupby(["host", "device_id"], sort=True, dropna=False):
        parts += [f"## {escape_md(host)} / {escape_md(device)}", ""]
        rows = []
        ordered = group.sort_values(["model_id", "quantization", "threads", "depth"], na_position="first")
        for _, row in ordered.iterrows():
            rows.append([
                escape_md(row["model_id"]), escape_md(row["quantization"]), escape_md(row["threads"]),
                escape_md(row["depth"]), fmt_mib(row["model_file_bytes"]), fmt_mib(row["peak_rss_bytes"]),
                f"{fmt_num(row['prefill_tok_s_mean'])} ± {fmt_num(row['prefill_tok_s_std'])}",
                f"{fmt_num(row['decode_tok_s_mean'])} ± {fmt_num(row['decode_tok_s_std'])}",
                fmt_num(row["ttft_ms_mean"], 0), fmt_num(row["itl_ms_p99"]),
            ])
        parts.append(table(["model", "quant", "threads", "depth (tok)", "file (MiB)", "peak RSS (MiB)",
                            "prefill (tok/s)", "decode (tok/s)", "TTFT (ms)", "ITL p99 (ms)"], rows))
        parts.append("")
    bad = frame[frame["status"] != "ok"]
    parts += ["## Failed and skipped cells", ""]
    if bad.empty:
        parts.append("None.")
    else:
        parts.append(table(["host", "model", "quant", "backend", "device", "status", "reason"], [
            [escape_md(r["host"]), escape_md(r["model_id"]), escape_md(r["quantization"]), escape_md(r["backend"]),
             escape_md(r["device_id"]), escape_md(r["status"]), escape_md(r["reason"])] for _, r in bad.iterrows()
        ]))
    return "\n".join(parts) + "\n"


def _machines(frame: pd.DataFrame) -> list[str]:
    rows = []
    for host, group in frame.groupby("host", sort=True, dropna=False):
        first = group.iloc[0]
        rows.append([escape_md(host), escape_md(first["cpu_brand"]),
                     escape_md(f"{first['cpu_physical_cores']}/{first['cpu_logical_cores']}"),
                     fmt_num(first["ram_total_bytes"] / 2**30 if pd.notna(first["ram_total_bytes"]) else None),
                     escape_md(first["gpu_name"]), escape_md(first["llama_cpp_python_version"]),
                     escape_md(first["started_utc"] if "started_utc" in group else "")])
    return ["## Machines", "", table(["host", "CPU", "cores (phys/log)", "RAM (GiB)", "GPU", "llama-cpp-python",
                                      "measured (UTC)"], rows), ""]

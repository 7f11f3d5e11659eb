"""Result rows -> the frames every section reads: merged rows, measured rows with derived metrics, configs.

A *configuration* is everything a buyer chooses: machine (host) and device, backend, model,
quantization, knobs (threads, offload, batch, KV type, ...) and the workload's prompt/generation
lengths. Depth is what it is measured at. Each configuration's headline figures are the ones at its
shallowest depth; deeper figures appear beside them. All of it is vectorized: a 100,000-row history
is reduced with pandas group/sort operations, never a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.results import ResultRow, select
from bench.suite import Suite

KNOB_COLUMNS = (
    "threads",
    "n_gpu_layers",
    "n_batch",
    "n_ubatch",
    "flash_attn",
    "kv_cache_type",
    "mmap",
    "repack",
    "torch_compile",
    "static_cache",
)
# How a knob is written in a configuration's short label (`t2 ngl all kv q8_0`).
KNOB_PREFIX = {
    "threads": "t",
    "n_gpu_layers": "ngl ",
    "n_batch": "batch ",
    "n_ubatch": "ubatch ",
    "flash_attn": "fa ",
    "kv_cache_type": "kv ",
    "mmap": "mmap ",
    "repack": "repack ",
    "torch_compile": "compile ",
    "static_cache": "static-cache ",
}
WORKLOAD_COLUMNS = ("prompt_tokens", "gen_tokens")
CONFIG_COLUMNS = (
    "host",
    "device_id",
    "backend",
    "model_id",
    "quantization",
    *KNOB_COLUMNS,
    *WORKLOAD_COLUMNS,
)
# The quality-loss axis of Pareto fronts and rankings: column and label, by metric.
QUALITY_LOSS_COLUMN = {"kld": "kld", "dppl": "dppl_pct"}
QUALITY_LOSS_LABEL = {"kld": "KLD vs baseline", "dppl": "ΔPPL vs baseline (%)"}

# Bytes per KV element by cache type (llama.cpp block sizes: q8_0 = 34 bytes per 32 values, ...).
KV_TYPE_BYTES = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q5_1": 24 / 32,
    "q5_0": 22 / 32,
    "q4_1": 20 / 32,
    "q4_0": 18 / 32,
    "iq4_nl": 18 / 32,
}


@dataclass
class ReportData:
    rows: pd.DataFrame  # merged rows of every status
    measured: pd.DataFrame  # status ok, one row per configuration x depth, with derived metrics
    configs: pd.DataFrame  # one row per configuration: its headline (shallowest-depth) figures
    sources: pd.DataFrame  # per input file: name, rows
    input_rows: int
    keep_all: bool
    suite: Suite | None
    quality_metric: str | None  # "kld" or "dppl": the quality-loss axis of Pareto fronts; None: not measured
    knobs: list[str]  # knob columns that take more than one value (the only ones labels mention)


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as str ('' when missing), numbers as numbers (NaN when missing), for any CSV age."""
    out = frame.copy()
    for name, spec in ResultRow.model_fields.items():
        annotation = str(spec.annotation)
        if name not in out:
            continue
        if "bool" in annotation:
            continue
        if "int" in annotation or "float" in annotation:
            out[name] = pd.to_numeric(out[name], errors="coerce")
        else:
            out[name] = out[name].astype(object).where(out[name].notna(), "").astype(str)
    return out


def merge_newest(frame: pd.DataFrame, keep_all: bool) -> pd.DataFrame:
    """Every row oldest first with `keep_all`, else the newest row of each cell on each machine
    (bench.results.select: the one rule report, compare, export and trend share)."""
    if keep_all:
        return select.oldest_first(frame).drop(columns=select.READING_ORDER).reset_index(drop=True)
    return select.newest_rows(frame).drop(columns=[select.CELL_KEY, select.MACHINE_KEY]).reset_index(drop=True)


def _label_text(values: pd.Series) -> pd.Series:
    return fmt.text(values).fillna("").astype(str)


def varying_knobs(measured: pd.DataFrame) -> list[str]:
    return [c for c in KNOB_COLUMNS if measured[c].nunique(dropna=False) > 1]


def knob_label(frame: pd.DataFrame, knobs: list[str]) -> pd.Series:
    """'t2 ngl all' from the knobs that vary; '' when none do."""
    if not knobs or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    pieces = []
    on_cpu = frame["device_kind"].eq("cpu").fillna(False)
    for column in knobs:
        values = _label_text(frame[column])
        if column == "n_gpu_layers":  # offload means nothing on a CPU device
            values = values.replace("-1", "all").where(~on_cpu, "")
        pieces.append((KNOB_PREFIX[column] + values).where(values != "", ""))
    joined = reduce(lambda a, b: a + " " + b, pieces)
    return joined.str.replace(r"\s+", " ", regex=True).str.strip()


def _device_labels(frame: pd.DataFrame) -> pd.Series:
    host = _label_text(frame["host"]).replace("", "unknown host")
    return host + " / " + _label_text(frame["device_id"])


def _memory_bytes(frame: pd.DataFrame) -> pd.Series:
    """The memory the device holds: VRAM on a GPU (when reported), the process's peak RSS otherwise."""
    vram = fmt.as_float(frame["peak_vram_bytes"])
    rss = fmt.as_float(frame["peak_rss_bytes"])
    on_gpu = frame["device_kind"].eq("cuda").fillna(False) & vram.notna()
    return vram.where(on_gpu, rss)


def _quality(frame: pd.DataFrame) -> pd.DataFrame:
    """KLD and ΔPPL % vs the baseline quantization; the baseline itself, once measured, has zero loss."""
    is_baseline = frame["quantization"].eq(frame["baseline_quantization"]).fillna(False)
    ppl = fmt.as_float(frame["ppl"])
    kld = fmt.as_float(frame["kld_mean"])
    kld = kld.where(~(is_baseline & kld.isna() & ppl.notna()), 0.0)
    ratio = fmt.as_float(frame["ppl_ratio"])
    baseline_keys = ["model_id", "backend", "host"]
    baseline_ppl = (
        frame.loc[is_baseline & ppl.notna(), [*baseline_keys, "ppl"]]
        .drop_duplicates(baseline_keys)
        .rename(columns={"ppl": "_baseline_ppl"})
    )
    if not baseline_ppl.empty:
        joined = frame[baseline_keys].merge(baseline_ppl, on=baseline_keys, how="left")
        ratio = ratio.fillna(
            pd.Series(ppl.to_numpy() / fmt.as_float(joined["_baseline_ppl"]).to_numpy(), index=frame.index)
        )
    dppl = (ratio - 1.0) * 100.0
    dppl = dppl.where(~(is_baseline & dppl.isna() & ppl.notna()), 0.0)
    return pd.DataFrame({"kld": kld, "dppl_pct": dppl}, index=frame.index)


def _bandwidth(frame: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Memory bandwidth per row: the suite's value for the device wins over the probe recorded in the row."""
    recorded = (
        fmt.as_float(frame["mem_bandwidth_gbs"])
        if "mem_bandwidth_gbs" in frame
        else pd.Series(np.nan, index=frame.index)
    )
    source = pd.Series(
        np.where(frame["device_kind"].eq("cuda").fillna(False), "NVML peak", "probe"),
        index=frame.index,
        dtype=object,
    ).where(recorded.notna(), "")
    if suite is not None:
        declared = {d.id: d.memory_bandwidth_gbs for d in suite.devices if d.memory_bandwidth_gbs}
        from_suite = fmt.as_float(frame["device_id"].map(declared))
        source = source.where(from_suite.isna(), "suite")
        recorded = from_suite.fillna(recorded)
    return pd.DataFrame({"bandwidth_gbs": recorded, "bandwidth_source": source}, index=frame.index)


def _roofline(frame: pd.DataFrame) -> pd.DataFrame:
    """Bytes read per decoded token ≈ weights + KV cache at the mean position of the decode; tok/s bound."""
    # Weights as held in memory (a dequantized torch row is larger than its GGUF file).
    in_memory = fmt.as_float(frame["n_params"]) * fmt.as_float(frame["bits_per_weight"]) / 8
    weights = in_memory.fillna(fmt.as_float(frame["est_weights_bytes"])).fillna(fmt.as_float(frame["model_file_bytes"]))
    per_token_measured = fmt.as_float(frame["kv_cache_bytes"]) / fmt.as_float(frame["n_ctx"])
    element_bytes = fmt.as_float(frame["kv_cache_type"].map(KV_TYPE_BYTES)).fillna(2.0)
    per_token_shape = (
        2
        * fmt.as_float(frame["n_layers"])
        * fmt.as_float(frame["n_kv_heads"])
        * fmt.as_float(frame["head_dim"])
        * element_bytes
    )
    kv_per_token = per_token_measured.where(per_token_measured > 0, per_token_shape).fillna(0.0)
    position = fmt.as_float(frame["depth"]).fillna(0) + fmt.as_float(frame["gen_tokens"]).fillna(0) / 2
    bytes_per_token = weights + kv_per_token * position
    roofline = frame["bandwidth_gbs"] * 1e9 / bytes_per_token
    decode = fmt.as_float(frame["decode_tok_s_mean"])
    return pd.DataFrame(
        {
            "bytes_per_token": bytes_per_token,
            "roofline_tok_s": roofline,
            "roofline_pct": 100.0 * decode / roofline,
        },
        index=frame.index,
    )


def derive(measured: pd.DataFrame, suite: Suite | None, keep_all: bool) -> tuple[pd.DataFrame, list[str]]:
    """Row-level metrics and labels for ok rows; `config_no` numbers the configurations."""
    keys = list(CONFIG_COLUMNS) + (["run_id"] if keep_all else [])
    frame = measured.reset_index(drop=True)
    frame["config_no"] = frame.groupby(keys, dropna=False, sort=True).ngroup()
    knobs = varying_knobs(frame)
    frame["device"] = _device_labels(frame)
    frame["knobs"] = knob_label(frame, knobs)
    model = _label_text(frame["model_id"]) + " " + _label_text(frame["quantization"])
    if frame["backend"].nunique() > 1:
        model = model + " " + _label_text(frame["backend"])
    frame["setup"] = (model + " " + frame["knobs"]).str.strip()
    if keep_all:
        frame["setup"] = frame["setup"] + " (" + _label_text(frame["finished_utc"]) + ")"
    frame["memory_bytes"] = _memory_bytes(frame)
    frame = frame.join(_quality(frame)).join(_bandwidth(frame, suite))
    frame = frame.join(_roofline(frame))
    energy = fmt.as_float(frame["energy_j_per_decode_token"])
    frame["tok_per_j"] = 1.0 / energy.where(energy > 0)
    return frame, knobs


def headline(measured: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the one at its shallowest depth, plus its slowest decode and where."""
    ordered = measured.sort_values(["config_no", "depth"], na_position="first", kind="stable")
    first = ordered.drop_duplicates("config_no", keep="first").set_index("config_no")
    slowest = (
        measured.assign(_decode=fmt.as_float(measured["decode_tok_s_mean"]))
        .sort_values(["config_no", "_decode"], na_position="last", kind="stable")
        .drop_duplicates("config_no")
        .set_index("config_no")
    )
    first["decode_worst"] = slowest["_decode"]
    first["decode_worst_depth"] = slowest["depth"]
    return first.reset_index()


def quality_metric(configs: pd.DataFrame) -> str | None:
    if configs["kld"].notna().any():
        return "kld"
    if configs["dppl_pct"].notna().any():
        return "dppl"
    return None


def sources_table(frame: pd.DataFrame) -> pd.DataFrame:
    counts = frame.groupby("source_file", sort=False).size()
    return pd.DataFrame({"file": [Path(p).name for p in counts.index], "rows": counts.to_numpy()})

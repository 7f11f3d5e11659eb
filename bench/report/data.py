"""Result rows -> the frames every section reads: merged rows, measured rows with derived metrics, configs.

A *configuration* is everything a buyer chooses: machine (host) and device, backend, model,
quantization, knobs (threads, offload, batch, KV type, ...) and the workload's prompt/generation
lengths. Depth is what it is measured at. Each configuration's headline figures are the ones at its
shallowest depth; deeper figures appear beside them. All of it is vectorized: a 100,000-row history
is reduced with pandas group/sort operations, never a Python loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.report import format as fmt
from bench.report.derived import bandwidth, memory_check, roofline
from bench.report.knobs import knob_label, knob_names, varying_knobs, with_knob_columns
from bench.report.users import USER_DECODE, sequences, user_tok_s
from bench.results import ResultRow, select
from bench.suite import Suite

WORKLOAD_COLUMNS = ("prompt_tokens", "gen_tokens")
# Columns no section reads, so they are not parsed at all: per-repetition samples (but TTFT's: capacity judges
# its percentile), warm-ups, CPU flags, build strings (29 % of the bytes of tests/fixtures/report/ladder-quality.csv, 44 % of the speed benchmark's
# history). tests/test_report_figures.py checks the report is the same with and without them. The cell's identity
# and the machine's stable hardware (device_index, gpu_count, ...) stay: the newest-row rule reads them.
UNREAD_COLUMNS = frozenset(
    {
        *(f"{m}_samples" for m in ("prefill_tok_s", "itl_ms_p50", "itl_ms_p90", "itl_ms_p99")),
        "energy_j_per_decode_token_samples",
        "warmup_prefill_tok_s",
        "warmup_decode_tok_s",
        "warnings",
        "cpu_flags",
        "cpu_arch",
        "backend_build",
        "python_version",
        "fingerprint",
        "model_desc",
        "derived_from",
        "threads_used",
        "prefill_tok_s_median",
        "decode_tok_s_median",
        "ttft_ms_median",
        "load_s",
        "prefill_overhead_pct",
        "decode_overhead_pct",
        "ppl_stderr",
        "kld_stderr",
        "kld_median",
        "kld_p99",
        "kld_max",
        "dp_correct_mean_pct",
        "dp_correct_rms_pct",
        "task_accuracy_stderr_pct",
        "ram_available_bytes",
        "gpu_vram_free_bytes",
        "gpu_power_limit_w",
        "est_device_free_bytes",
        "model_buffers_bytes",
        "compute_buffer_bytes",
        "model_weights_bytes",
        "rss_before_load_bytes",
    }
)
# The quality-loss axis of Pareto fronts and rankings, by metric (its label: bench.report.baseline.loss_label).
QUALITY_LOSS_COLUMN = {"kld": "kld", "dppl": "dppl_pct"}


def config_columns() -> list[str]:
    """What a buyer chooses: machine, device, backend, model, quantization, every registered knob, workload."""
    return ["host", "device_id", "backend", "model_id", "quantization", *knob_names(), *WORKLOAD_COLUMNS]


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
    out = with_knob_columns(frame).copy()
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
    return out.copy()  # consolidated: column-by-column conversion fragments a wide frame (pandas then warns)


def merge_newest(frame: pd.DataFrame, keep_all: bool) -> pd.DataFrame:
    """Every row oldest first with `keep_all`, else the newest row of each cell on each machine
    (bench.results.select: the one rule report, compare, export and trend share)."""
    if keep_all:
        return select.oldest_first(frame).drop(columns=select.READING_ORDER).reset_index(drop=True)
    return select.newest_rows(frame).drop(columns=[select.CELL_KEY, select.MACHINE_KEY]).reset_index(drop=True)


def _label_text(values: pd.Series) -> pd.Series:
    return fmt.text(values).fillna("").astype(str)


ENGINE = "engine"  # what served a row measured inside bench's own process (no server between user and engine)


def served_by(frame: pd.DataFrame) -> pd.Series:
    """What answered each row's requests: a server's name (llama-server, vLLM, host:port) or `engine`."""
    names = _label_text(frame["served_by"]) if "served_by" in frame else pd.Series("", index=frame.index)
    return names.replace("", ENGINE)


def device_labels(frame: pd.DataFrame) -> pd.Series:
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


def derive(measured: pd.DataFrame, suite: Suite | None, keep_all: bool) -> tuple[pd.DataFrame, list[str]]:
    """Row-level metrics and labels for ok rows; `config_no` numbers the configurations."""
    keys = config_columns() + (["run_id"] if keep_all else [])
    frame = measured.reset_index(drop=True)
    frame["config_no"] = frame.groupby(keys, dropna=False, sort=True).ngroup()
    knobs = varying_knobs(frame)
    frame["device"] = device_labels(frame)
    frame["knobs"] = knob_label(frame, knobs)
    model = _label_text(frame["model_id"]) + " " + _label_text(frame["quantization"])
    if frame["backend"].nunique() > 1:
        model = model + " " + _label_text(frame["backend"])
    frame["setup"] = (model + " " + frame["knobs"]).str.strip()
    if keep_all:
        frame["setup"] = frame["setup"] + " (" + _label_text(frame["finished_utc"]) + ")"
    frame["memory_bytes"] = _memory_bytes(frame)
    frame["sequences"] = sequences(frame)
    frame[USER_DECODE] = user_tok_s(frame)
    frame = frame.join(_quality(frame)).join(bandwidth(frame, suite))
    frame = frame.join(roofline(frame)).join(memory_check(frame))
    energy = fmt.as_float(frame["energy_j_per_decode_token"])
    frame["tok_per_j"] = 1.0 / energy.where(energy > 0)
    return frame.copy(), knobs  # consolidated once: every section adds its own columns to this frame


def headline(measured: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the one at its shallowest depth, plus its slowest per-user decode and where."""
    ordered = measured.sort_values(["config_no", "depth"], na_position="first", kind="stable")
    first = ordered.drop_duplicates("config_no", keep="first").set_index("config_no").copy()  # consolidated
    slowest = (
        measured.assign(_decode=fmt.as_float(measured[USER_DECODE]))
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

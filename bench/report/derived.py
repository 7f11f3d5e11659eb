"""Figures the report derives from each row: memory bandwidth and its kind, the decode roofline, the planner's
memory estimate against the measured memory, and which figures are unstable. Whole columns at a time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.users import sequences
from bench.stats import UNSTABLE_CV_PCT
from bench.suite import Suite

# mem_bandwidth_source (written by bench.hardware.bandwidth) -> how the report names it. A theoretical peak is never
# reached, so a roofline percentage against it and one against a measured probe are different things.
CPU_READ_PROBE = "cpu_read_probe"
NVML_PEAK = "nvml_theoretical_peak"
OLD_COPY_PROBE = "copy_probe"  # rows written before the source column: the CPU figure was a copy probe
FROM_SUITE = "suite"
BANDWIDTH_KINDS = {
    CPU_READ_PROBE: "CPU read probe",
    NVML_PEAK: "NVML theoretical peak",
    OLD_COPY_PROBE: "older copy probe",
    FROM_SUITE: "suite",
}
BANDWIDTH_METHODS = {
    CPU_READ_PROBE: "measured by bench's CPU read probe (threads summing a buffer larger than the last-level "
    "cache; bytes read per second)",
    NVML_PEAK: "the GPU's theoretical peak (memory bus width × clock, NVML), not a measurement",
    OLD_COPY_PROBE: "an older bench's copy probe (a 64 MiB buffer copied, bytes read + written; it may have "
    "fitted in the CPU's cache)",
    FROM_SUITE: "declared in the suite (devices[].memory_bandwidth_gbs)",
}
# What the measured memory beside the planner's estimate is, per row (never mixed silently).
MODEL_RSS = "model RSS"  # peak resident memory minus the resident memory before the model was loaded
PEAK_VRAM = "peak VRAM"
WHOLE_PROCESS = "whole process"  # older rows: the worker's peak RSS, interpreter and libraries included
MEASURED_MEMORY_KINDS = {
    MODEL_RSS: "the worker's peak resident memory minus its resident memory just before loading the model",
    PEAK_VRAM: "the device memory the process held at its peak",
    WHOLE_PROCESS: "the worker's whole peak resident memory (interpreter and libraries included; rows from a "
    "bench that did not record the pre-load memory), not comparable with the estimate",
}


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A numeric column, all NaN when an older CSV lacks it."""
    if name not in frame:
        return pd.Series(np.nan, index=frame.index)
    return fmt.as_float(frame[name])


def _text_column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name not in frame:
        return pd.Series("", index=frame.index, dtype=object)
    return frame[name].astype(object).where(frame[name].notna(), "").astype(str)


def bandwidth(frame: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Bandwidth per row (GB/s) and its kind: the suite's value for the device wins over the row's figure."""
    recorded = _column(frame, "mem_bandwidth_gbs")
    source = _text_column(frame, "mem_bandwidth_source")
    on_gpu = frame["device_kind"].eq("cuda").fillna(False).astype(bool)
    unlabelled = source.eq("") & recorded.notna()  # a row from before the source column: what bench did then
    source = source.where(~(unlabelled & on_gpu), NVML_PEAK).where(~(unlabelled & ~on_gpu), OLD_COPY_PROBE)
    source = source.where(recorded.notna(), "")
    if suite is not None:
        declared = {d.id: d.memory_bandwidth_gbs for d in suite.devices if d.memory_bandwidth_gbs}
        from_suite = fmt.as_float(frame["device_id"].map(declared))
        source = source.where(from_suite.isna(), FROM_SUITE)
        recorded = from_suite.fillna(recorded)
    kind = source.map(lambda s: BANDWIDTH_KINDS.get(s, s)).astype(object)
    return pd.DataFrame({"bandwidth_gbs": recorded, "bandwidth_source": kind}, index=frame.index)


def weights_read_per_token(frame: pd.DataFrame) -> pd.Series:
    """Weight bytes one decode step reads: every tensor but the token-embedding table, of which it reads one
    row, unless the output head is that table (tied). Rows that do not say whether it is tied count it all.
    A mixture of experts reads its used experts only: the weights times n_active_params / n_params (the
    step's sequences taken to share their experts, the fewest bytes a step can read)."""
    in_memory = _column(frame, "n_params") * _column(frame, "bits_per_weight") / 8  # a dequantized torch row is
    weights = in_memory.fillna(_column(frame, "model_file_bytes"))  # larger than its file
    untied = frame["tied_embeddings"].eq(False).fillna(False).astype(bool) if "tied_embeddings" in frame else False
    embeddings = _column(frame, "token_embd_bytes").where(untied, 0.0).fillna(0.0)
    read = (weights - embeddings).fillna(_column(frame, "est_weights_bytes"))
    active_share = (_column(frame, "n_active_params") / _column(frame, "n_params")).clip(upper=1.0).fillna(1.0)
    return read * active_share


def decode_context(frame: pd.DataFrame) -> pd.Series:
    """Tokens each sequence had cached when its decode started: `decode_context_tokens` (depth + prompt: decode
    follows the prompt), or the depth in rows written before that column (their decode ran at `depth`, the
    prompt dropped from the cache first)."""
    return _column(frame, "decode_context_tokens").fillna(_column(frame, "depth").fillna(0))


def kv_bytes_per_token(frame: pd.DataFrame) -> pd.Series:
    """KV cache bytes one context position takes: the backend's measured KV buffer, else the planner's estimate,
    over the context it was sized for. NaN when the row has neither."""
    n_ctx = _column(frame, "n_ctx").where(lambda n: n > 0)
    measured = _column(frame, "kv_cache_bytes") / n_ctx
    estimated = _column(frame, "est_kv_bytes") / n_ctx
    return measured.where(measured > 0, estimated)


def roofline(frame: pd.DataFrame) -> pd.DataFrame:
    """The decode roofline. One decode step reads the weights once and each sequence's KV cache (at the mean
    position of the decode: the context it started at, decode_context, plus half the generated tokens), and
    yields one token per sequence: with N sequences the bound on all users' tok/s is N × bandwidth / bytes per
    step, so a row at N sequences is compared with N tokens per weight read."""
    position = decode_context(frame) + _column(frame, "gen_tokens").fillna(0) / 2
    n_seq = sequences(frame)
    bytes_per_step = weights_read_per_token(frame) + kv_bytes_per_token(frame) * position * n_seq
    bound = n_seq * frame["bandwidth_gbs"] * 1e9 / bytes_per_step
    return pd.DataFrame(
        {
            "bytes_per_step": bytes_per_step,
            "roofline_tok_s": bound,
            "roofline_pct": 100.0 * _column(frame, "decode_tok_s_mean") / bound,
        },
        index=frame.index,
    )


def memory_check(frame: pd.DataFrame) -> pd.DataFrame:
    """The planner's estimate (est_total_bytes) beside the measured memory of the same thing, with the ratio.

    Measured: peak VRAM on a GPU; on a CPU what loading the model added to the worker's resident memory
    (model_rss_bytes). Older rows have only the whole process's peak: shown as such, with no ratio.
    """
    on_gpu = frame["device_kind"].eq("cuda").fillna(False).astype(bool)
    vram, model_rss = _column(frame, "peak_vram_bytes"), _column(frame, "model_rss_bytes")
    whole = _column(frame, "peak_rss_bytes")
    use_vram = on_gpu & vram.notna()
    measured = vram.where(use_vram, model_rss)
    kind = pd.Series(np.where(use_vram, PEAK_VRAM, MODEL_RSS), index=frame.index, dtype=object)
    comparable = measured.notna()
    kind = kind.where(comparable, WHOLE_PROCESS).where(comparable | whole.notna(), "")
    estimate = _column(frame, "est_total_bytes")
    return pd.DataFrame(
        {
            "est_memory_bytes": estimate,
            "measured_memory_bytes": measured.where(comparable, whole),
            "measured_memory_kind": kind,
            "measured_vs_estimate": (measured / estimate.where(estimate > 0)).where(comparable),
        },
        index=frame.index,
    )


def unstable(frame: pd.DataFrame, metric: str = "decode_tok_s") -> pd.Series:
    """The row's figure is flagged unstable, or its spread over repetitions is above the limit (bench.stats)."""
    flagged = frame["unstable"].eq(True).fillna(False).astype(bool) if "unstable" in frame else False
    return flagged | (_column(frame, f"{metric}_cv_pct") > UNSTABLE_CV_PCT)


def noisy(frame: pd.DataFrame) -> pd.Series:
    """The row was measured while the machine reported noise (busy CPU, throttling, ...: system_warnings)."""
    return _text_column(frame, "system_warnings").str.strip().ne("")


NOISE_MARK = " ⚑"  # a figure measured while the machine reported noise (system_warnings)


def noise_mark(frame: pd.DataFrame) -> pd.Series:
    """' ⚑' on noisy rows, followed by how busy other processes kept the machine while the cell ran where the
    row recorded it (' ⚑ 48% busy': background_cpu_pct), so a reader can judge the figure; '' elsewhere."""
    busy = _column(frame, "background_cpu_pct")
    load = busy.map(lambda pct: "" if pd.isna(pct) else f" {pct:.0f}% busy")
    return pd.Series(NOISE_MARK, index=frame.index).str.cat(load).where(noisy(frame), "")

"""How long `bench run` will take: an estimate per cell, from past results of the same cell when there are
any, else from a simple model of the hardware. Every figure here is an estimate, and is said to be one.

A cell costs what bench.runners.base.measure_cell does with it, plus its share of its load group's start:

    cell = (worker start + model load) / cells in its load group
           + depth fill (once per cell) + (warm-ups + repetitions) × (prompt prefill + generated tokens decoded)
           + sustain_s (the sustained mode's decoding, when the workload asks for it)

(with `parallel` N: N depth fills and prompts, and decode steps that make a token for each of N sequences).

From past results (the newest `ok` row with the same cell_id; rows from this machine when the history has
any, else from any machine): the measured prefill and decode tok/s and load_s.

Otherwise from the model, with the memory planner's estimate of the cell (no estimate, no time):
* decode is memory-bound: each generated token reads the weights on the cell's device and the KV cache so far
  (decode follows the prompt: depth + prompt + the tokens generated before it), at DECODE_BANDWIDTH_SHARE of the
  device's memory bandwidth;
* prefill (the depth fill too) is compute-bound: 2 FLOPs per parameter per token, plus attention over the
  positions before it, at the device's FLOP rate (a CPU's: per core × threads);
* bandwidth: one the caller measured (bench run probes RAM), else the suite's devices[].memory_bandwidth_gbs,
  else NVML's peak for a present GPU, else the default for the device kind below, said as "assumed";
* FLOP rates are assumed defaults per device kind (below); past results of the same cells replace them.
Quality measurements (perplexity, KLD, tasks) are not included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.hardware import Fingerprint
from bench.plan.planned import PlannedCell
from bench.runners.base import decode_context_tokens
from bench.runners.memory import CellMemory
from bench.suite import Cell, Suite

if TYPE_CHECKING:
    import pandas as pd

# Assumed, not measured (a past run of the same cells replaces them):
# dual-channel DDR4-3200 moves 2 channels × 8 B × 3.2 GT/s = 51.2 GB/s;
DEFAULT_BANDWIDTH_GBS = {"cpu": 50.0, "cuda": 900.0}  # cuda: an RTX 3090's 936 GB/s, rounded down
# llama.cpp's decode reaches a part of peak bandwidth only (kernel launches, dequantization, sampling).
DECODE_BANDWIDTH_SHARE = 0.6
# Effective prefill FLOP rates: a CPU core's (AVX2/AVX-512 quantized matmul), and a whole GPU's (about a
# third of an RTX 4090's 165 TFLOP/s dense fp16 tensor peak).
DEFAULT_FLOPS = {"cpu": 50e9, "cuda": 50e12}
FLOPS_PER_CORE_KINDS = frozenset({"cpu"})  # kinds whose FLOP rate scales with the cell's threads
LOAD_BYTES_PER_S = 2e9  # reading the weights into memory (page cache or NVMe)
WORKER_START_S = 2.0  # a worker process: interpreter, numpy, the backend's library


@dataclass(frozen=True)
class DeviceRate:
    """What a device's cells run at, and where each figure came from."""

    kind: str
    bandwidth_gbs: float
    bandwidth_source: str  # "measured", "suite", "NVML peak", "assumed"
    flops: float  # FLOP/s: per core for kinds in FLOPS_PER_CORE_KINDS, else the whole device
    cores: int = 1  # a CPU's physical cores: what threads = 0 uses

    def flops_for(self, threads: int | None) -> float:
        if self.kind not in FLOPS_PER_CORE_KINDS:
            return self.flops
        return self.flops * (threads or self.cores)


@dataclass(frozen=True)
class CellTime:
    seconds: float
    basis: str  # "past results", "model", "skipped"


def device_rates(
    suite: Suite, fingerprint: Fingerprint, measured_gbs: Mapping[str, float] | None = None
) -> dict[str, DeviceRate]:
    """Per device id, its bandwidth and FLOP rate (measured_gbs: bandwidths the caller probed, by device id)."""
    rates = {}
    for device in suite.devices:
        gpu = fingerprint.gpus[device.index] if device.kind == "cuda" and device.index < len(fingerprint.gpus) else None
        peak = gpu.memory_bandwidth_gbs() if gpu is not None else None
        if measured_gbs and measured_gbs.get(device.id):
            bandwidth, source = float(measured_gbs[device.id]), "measured"
        elif device.memory_bandwidth_gbs:
            bandwidth, source = device.memory_bandwidth_gbs, "suite"
        elif peak:
            bandwidth, source = peak, "NVML peak"
        else:
            bandwidth, source = DEFAULT_BANDWIDTH_GBS.get(device.kind, DEFAULT_BANDWIDTH_GBS["cpu"]), "assumed"
        rates[device.id] = DeviceRate(
            device.kind,
            bandwidth,
            source,
            DEFAULT_FLOPS.get(device.kind, DEFAULT_FLOPS["cpu"]),
            max(1, fingerprint.cpu_physical_cores),
        )
    return rates


def _default_rate(kind: str) -> DeviceRate:
    return DeviceRate(
        kind,
        DEFAULT_BANDWIDTH_GBS.get(kind, DEFAULT_BANDWIDTH_GBS["cpu"]),
        "assumed",
        DEFAULT_FLOPS.get(kind, DEFAULT_FLOPS["cpu"]),
    )


@dataclass(frozen=True)
class _Measured:
    prefill_tok_s: float
    decode_tok_s: float
    load_s: float | None


def past_rates(history: pd.DataFrame | None, fingerprint_id: str | None = None) -> dict[str, _Measured]:
    """The newest ok measurement of each cell_id in the history (this machine's rows when it has any)."""
    import pandas as pd  # only when past results are given: `bench plan` stays quick without them

    if history is None or history.empty or "cell_id" not in history.columns:
        return {}
    frame = history[history["status"].astype(str) == "ok"]
    if fingerprint_id and "fingerprint" in frame.columns:
        mine = frame["fingerprint"].astype(str) == fingerprint_id
        frame = frame[mine] if mine.any() else frame
    numbers = pd.DataFrame(
        {
            column: pd.to_numeric(frame[column], errors="coerce")
            for column in ("prefill_tok_s_mean", "decode_tok_s_mean", "load_s")
        }
    )
    numbers["cell_id"] = frame["cell_id"].astype(str)
    numbers["order"] = frame["finished_utc"].astype(str) if "finished_utc" in frame.columns else ""
    numbers = numbers[(numbers["prefill_tok_s_mean"] > 0) & (numbers["decode_tok_s_mean"] > 0)]
    newest = numbers.sort_values("order", kind="stable").drop_duplicates("cell_id", keep="last")
    return {
        cell_id: _Measured(prefill, decode, None if pd.isna(load) else float(load))
        for cell_id, prefill, decode, load in zip(
            newest["cell_id"], newest["prefill_tok_s_mean"], newest["decode_tok_s_mean"], newest["load_s"], strict=True
        )
    }


def _repetitions(cell: Cell) -> int:
    return cell.warmup + cell.repetitions


def _sequences(cell: Cell) -> int:
    return cell.setting("parallel")


def _measured_seconds(cell: Cell, past: _Measured) -> float:
    """The cell's measuring at the measured (all sequences') rates: the depth fill at the prefill rate, then
    per repetition the prompts and the decode steps."""
    n_seq = _sequences(cell)
    repetition = cell.prompt_tokens / past.prefill_tok_s + cell.gen_tokens / past.decode_tok_s
    return n_seq * (cell.depth / past.prefill_tok_s + _repetitions(cell) * repetition) + cell.sustain_s


def _modelled_seconds(cell: Cell, memory: CellMemory | None, rate: DeviceRate) -> tuple[float, float] | None:
    """(the cell's measuring, model load) from the hardware model, or None without a memory estimate."""
    if memory is None or memory.estimate is None or memory.model is None:
        return None
    estimate, model = memory.estimate, memory.model
    dense = 2.0 * model.n_params * model.active_share  # FLOPs per token through the weights it uses
    attention = model.attention_flops_per_position
    depth, prompt, gen, n_seq = cell.depth, cell.prompt_tokens, cell.gen_tokens, _sequences(cell)
    # Each sequence fills its depth (once) and prefills its prompt (every repetition), attending to its own
    # earlier positions.
    fill_flops = n_seq * (depth * dense + attention * depth**2 / 2)
    prompt_flops = n_seq * (prompt * dense + attention * ((depth + prompt) ** 2 - depth**2) / 2)
    kv_per_position = estimate.kv_bytes / estimate.n_ctx if estimate.n_ctx else 0.0
    # A decode step reads the weights once (a mixture of experts: its used experts' share, as if the
    # sequences of a step chose the same experts) and every sequence's KV cache so far: on average the context
    # decode starts at (after the prompt) plus half the generated tokens.
    weights_read = estimate.weights_bytes * model.active_share
    bytes_read = gen * (weights_read + n_seq * kv_per_position * (decode_context_tokens(cell) + gen / 2))
    flops = rate.flops_for(cell.threads)
    repetition = prompt_flops / flops + bytes_read / (rate.bandwidth_gbs * 1e9 * DECODE_BANDWIDTH_SHARE)
    measuring = fill_flops / flops + _repetitions(cell) * repetition + cell.sustain_s
    return measuring, estimate.weights_bytes / LOAD_BYTES_PER_S


def estimate_cell_times(
    planned: Sequence[PlannedCell],
    history: pd.DataFrame | None = None,
    rates: Mapping[str, DeviceRate] | None = None,
    fingerprint_id: str | None = None,
) -> dict[str, CellTime]:
    """Each planned cell's estimated seconds in `bench run`, by cell id. Skipped cells cost 0; a cell with
    neither past results nor a memory estimate (a backend without a memory planner) is left out."""
    past = past_rates(history, fingerprint_id)
    rates = dict(rates or {})
    times: dict[str, CellTime] = {}
    groups: dict[tuple[object, ...], list[tuple[str, float | None]]] = {}  # load key -> (cell id, load_s)
    for item in planned:
        cell, cell_id = item.cell, item.cell_id
        if not item.runnable:
            times[cell_id] = CellTime(0.0, "skipped")
            continue
        rate = rates.get(cell.device_id) or rates.setdefault(cell.device_id, _default_rate(cell.device_kind))
        measured = past.get(cell_id)
        if measured is not None:
            times[cell_id] = CellTime(_measured_seconds(cell, measured), "past results")
            load_s = measured.load_s
        else:
            modelled = _modelled_seconds(cell, item.memory, rate)
            if modelled is None:
                continue
            times[cell_id] = CellTime(modelled[0], "model")
            load_s = modelled[1]
        groups.setdefault(cell.load_key(), []).append((cell_id, load_s))
    for members in groups.values():  # one worker start and one load per group, shared by its cells
        loads = [load for _, load in members if load is not None]
        share = (WORKER_START_S + (max(loads) if loads else 0.0)) / len(members)
        for cell_id, _ in members:
            time = times[cell_id]
            times[cell_id] = CellTime(time.seconds + share, time.basis)
    return times


def estimate_cell_seconds(
    planned: Sequence[PlannedCell],
    history: pd.DataFrame | None = None,
    rates: Mapping[str, DeviceRate] | None = None,
    fingerprint_id: str | None = None,
) -> dict[str, float]:
    """estimate_cell_times as plain seconds (what a progress bar needs); cells without an estimate are absent."""
    return {
        cell_id: time.seconds for cell_id, time in estimate_cell_times(planned, history, rates, fingerprint_id).items()
    }


def duration_text(seconds: float) -> str:
    """3 h 20 min, 12 min, 45 s."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, rest = divmod(round(minutes), 60)
    return f"{hours} h {rest} min" if hours < 48 else f"{seconds / 86400:.1f} days"


def describe_rates(rates: Mapping[str, DeviceRate], devices: Sequence[str] | None = None) -> str:
    """The model's assumptions, for the plan's output: bandwidth and FLOP rate per device, and their sources."""
    parts = []
    for device_id, rate in rates.items():
        if devices is not None and device_id not in devices:
            continue
        flops = (
            f"{rate.flops / 1e9:,.0f} GFLOP/s per core"
            if rate.kind in FLOPS_PER_CORE_KINDS
            else f"{rate.flops / 1e12:,.0f} TFLOP/s"
        )
        parts.append(f"{device_id}: {rate.bandwidth_gbs:,.0f} GB/s ({rate.bandwidth_source}), {flops} (assumed)")
    return (
        f"decode at {DECODE_BANDWIDTH_SHARE:.0%} of memory bandwidth, prefill at a FLOP rate; "
        + "; ".join(parts)
        + f"; load {LOAD_BYTES_PER_S / 1e9:g} GB/s + {WORKER_START_S:g} s per model load"
    )

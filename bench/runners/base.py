"""The speed contract every backend implements, and the one timing loop they all share.

A backend's engine loads a model, sizes a context for a cell, fills the KV cache, and times a prefill and
single-token decodes (synchronizing its device before the clock stops). The measurement protocol (warm-ups
kept apart, repetitions, TTFT, inter-token latency, harness overhead) lives here once, so every backend
measures the same thing. Quality (tokenize, logits) is a separate, optional contract (bench.quality): a
backend that cannot give logits is still a backend.
"""

from __future__ import annotations

import abc
import ctypes
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from bench.hardware.sampler import MIN_ENERGY_WINDOW_S
from bench.results import samples_to_text
from bench.runners.cell_energy import cell_energy, energy_fields
from bench.runners.sustain import Chunks, decode_chunks, sustained_fields
from bench.stats import percentile, summarize
from bench.suite import Cell

Tokens = TypeVar("Tokens", int, float, np.ndarray)  # a token count, or an array of them (a report's column)
CONTEXT_ROUND = 256  # contexts are rounded up to this, so nearby cells share a size class (llama.cpp pads too)


def context_size(cell: Cell, per_sequence: bool = False) -> int:
    """The KV cells a cell needs: every sequence's depth, prompt and generated tokens (as llama-bench sizes
    n_ctx), rounded up to CONTEXT_ROUND; per_sequence: one sequence's share."""
    sequences = 1 if per_sequence else cell.setting("parallel")
    needed = sequences * (cell.depth + cell.prompt_tokens + cell.gen_tokens)
    return -(-needed // CONTEXT_ROUND) * CONTEXT_ROUND


def decode_context_tokens(cell: Cell) -> int:
    """Tokens each sequence holds in its KV cache when its decode starts: its depth and its prompt (decode
    continues after the prompt, as llama-batched-bench decodes at pp + i). Rows written before this was so
    decoded at `depth`: the report reads their blank `decode_context_tokens` as the depth
    (bench.report.derived.decode_context), and compare does not test decode across the two."""
    return cell.depth + cell.prompt_tokens


def per_sequence_context(tokens: Tokens, sequences: int | np.ndarray) -> Tokens:
    """One sequence's share of a KV cache that `sequences` sequences (`parallel`) fill together, in whole
    CONTEXT_ROUND blocks: every "largest context" bench shows (the plan, the report's What fits, the
    recommendations' min_context) is what one user gets, not the whole cache (a backend's memory planner
    answers per sequence: bench.runners.llamacpp.memory.max_context and max_context_for_row)."""
    return tokens // sequences // CONTEXT_ROUND * CONTEXT_ROUND  # type: ignore[no-any-return]


@dataclass
class LoadInfo:
    load_s: float
    n_params: int | None = None
    model_file_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # row fields the backend knows (arch, layers, ...)


@dataclass
class Repetition:
    prefill_s: float  # all sequences' prompts
    decode_token_s: list[float]  # per decode step (one token for every sequence)
    decode_energy_j: float | None = None  # from the device's energy counter, decode phase only
    # The engine's own account of the same timed calls (llama.cpp's perf counters), when it keeps one.
    engine_prefill_s: float | None = None
    engine_decode_s: float | None = None
    # Per sequence: seconds from the prefill's start until its last prompt token was processed (its first token
    # can be sampled then); empty: every sequence at the prefill's end.
    ready_s: list[float] = field(default_factory=list)


class EnergyMeter(Protocol):
    def mark(self) -> None: ...
    def energy_j_since_mark(self) -> float | None: ...


class Engine(abc.ABC):
    """What every backend's engine has: one loaded model on one device, a context per cell, memory fields, close.
    Created and used inside a worker process only. An engine is either a SpeedEngine (bench times its steps with
    measure_cell) or a CellEngine (it measures a whole cell itself)."""

    backend: ClassVar[str]

    @abc.abstractmethod
    def __init__(self, model_path: Path, load_cell: Cell) -> None: ...

    @abc.abstractmethod
    def load(self) -> LoadInfo: ...

    @abc.abstractmethod
    def start_context(self, cell: Cell) -> dict[str, Any]:
        """Make a context fit for the cell (threads, batch, KV type, n_ctx). Returns row fields."""

    def memory_fields(self) -> dict[str, Any]:
        """Device-side memory the backend can read (peak VRAM, KV bytes). Default: nothing."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model and context."""


class CellEngine(Engine):
    """An engine whose measurement is not a sequence of prefill and decode steps bench can time (e.g. requests
    sent over HTTP by N users): it runs the cell's warm-ups and repetitions itself and returns the row's speed
    fields (the same column names repetition_fields fills, plus any other columns of the row schema)."""

    @abc.abstractmethod
    def measure(self, cell: Cell, energy: EnergyMeter | None = None) -> dict[str, Any]:
        """Warm-ups then `cell.repetitions` measured rounds; the row's speed fields."""

    def sustain_chunks(self, cell: Cell) -> Chunks | None:
        """For the sustained mode (bench.runners.sustain): keep the cell's work going after `measure`, yielding
        (tokens made, seconds) per step until the caller stops; None (default) where the engine cannot."""
        return None


class SpeedEngine(Engine):
    """An engine whose prefill and decode steps measure_cell times: the speed contract most backends implement."""

    @abc.abstractmethod
    def n_vocab(self) -> int: ...

    @abc.abstractmethod
    def bos_token(self) -> int | None:
        """The token a sequence starts with, or None if the model adds none."""

    @abc.abstractmethod
    def reset(self, depth_tokens: np.ndarray) -> None:
        """Clear the KV cache and fill sequence s with depth_tokens[s] (shape [sequences, depth]; not timed)."""

    @abc.abstractmethod
    def truncate(self, n_keep: int) -> bool:
        """Drop every sequence's positions >= n_keep. False if the cache cannot (then reset() is used)."""

    @abc.abstractmethod
    def prefill(self, tokens: np.ndarray) -> float:
        """Process prompt tokens[s] after sequence s's cache (shape [sequences, n]), batched across sequences;
        seconds until the device is done."""

    def prefill_ready_s(self) -> list[float] | None:
        """Per sequence, seconds from the start of the last prefill until the batch holding that sequence's last
        prompt token was done (its first token is available then); None: every sequence at the prefill's end
        (one forward pass for all of them)."""
        return None

    @abc.abstractmethod
    def decode(self, tokens: np.ndarray) -> list[float]:
        """Decode steps (shape [steps, sequences]): each step one token for every sequence; seconds per step,
        device synchronized."""

    def engine_seconds(self) -> tuple[float, float] | None:
        """The engine's own cumulative (prompt, generation) compute time, if it keeps one; None otherwise.
        measure_cell takes differences around each timed phase to measure the harness's own overhead."""
        return None

    def on_measured_start(self) -> None:  # noqa: B027 - optional hook
        """The warm-ups are done; measured repetitions follow (e.g. watch for recompilation from here)."""

    def on_measured_end(self) -> None:  # noqa: B027 - optional hook
        """The measured repetitions are done; raise BenchError if something made them invalid."""


def release_freed_heap() -> None:
    """Hand pages glibc keeps after a free (heap and arena memory below its mmap threshold) back to the OS,
    so that the process's resident set is what it still holds: a cell's peak then does not carry a freed
    context of the cell before it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc (e.g. musl): nothing to trim
            pass


def random_tokens(rng: np.random.Generator, n_vocab: int, shape: tuple[int, int], first: int | None) -> np.ndarray:
    """Random tokens, as llama-bench uses: content does not change the cost of a dense forward pass.
    `first` (the BOS token) starts each row when given."""
    tokens = rng.integers(0, n_vocab, size=shape, dtype=np.int32)
    if first is not None and shape[1] > 0:
        tokens[:, 0] = first
    return tokens


def _engine_delta(engine: SpeedEngine, before: tuple[float, float] | None, phase: int) -> float | None:
    after = engine.engine_seconds()
    if before is None or after is None:
        return None
    return after[phase] - before[phase]


def measure_cell(
    engine: SpeedEngine, cell: Cell, energy: EnergyMeter | None = None, seed: int = 1234
) -> tuple[list[Repetition], list[Repetition]]:
    """Warm-ups, then repetitions, of: back to `depth` cached tokens (untimed), timed prefill, timed decode.

    Prefill is measured after `depth` cached tokens, as llama-bench's pp at `-d depth`. Decode continues after
    the prompt, at `depth + prompt_tokens` (decode_context_tokens), as llama-batched-bench decodes at pp + i and
    a user's answer follows its prompt; a single sequence's decode therefore matches llama-bench's tg at
    `-d depth+prompt`. The depth is filled once per cell, as llama-bench fills it once per test: each later
    repetition drops what the previous one added (an engine that cannot drop positions, e.g. a static torch
    cache, is filled again). The first generated token comes from the prefill's last logits, so a sequence's
    time to first token is the prefill up to the batch holding its last prompt token (prefill_ready_s). With
    `parallel` N, N sequences (each with its own depth) are prefilled together and decoded together one token
    each per step, as llama-batched-bench measures. Returns (warmups, measured).
    """
    rng = np.random.default_rng(seed)
    n_vocab = engine.n_vocab()
    bos = engine.bos_token()
    n_seq = cell.setting("parallel")
    depth_tokens = random_tokens(rng, n_vocab, (n_seq, cell.depth), bos)
    warmups: list[Repetition] = []
    measured: list[Repetition] = []
    for index in range(cell.warmup + cell.repetitions):
        if index == cell.warmup:
            engine.on_measured_start()
        prompt = random_tokens(rng, n_vocab, (n_seq, cell.prompt_tokens), bos if cell.depth == 0 else None)
        generated = random_tokens(rng, n_vocab, (cell.gen_tokens, n_seq), None)
        if index == 0 or not engine.truncate(cell.depth):
            engine.reset(depth_tokens)
        before = engine.engine_seconds()
        prefill_s = engine.prefill(prompt)
        engine_prefill_s = _engine_delta(engine, before, 0)
        ready_s = engine.prefill_ready_s() or [prefill_s] * n_seq
        if energy is not None:
            energy.mark()
        before = engine.engine_seconds()
        decode_s = engine.decode(generated)
        engine_decode_s = _engine_delta(engine, before, 1)
        decode_j = energy.energy_j_since_mark() if energy is not None else None
        (warmups if index < cell.warmup else measured).append(
            Repetition(prefill_s, decode_s, decode_j, engine_prefill_s, engine_decode_s, list(ready_s))
        )
    engine.on_measured_end()
    return warmups, measured


def _overhead_pct(timed: list[float], engine: list[float | None]) -> float | None:
    """How much longer bench's clock ran than the engine's own account of the same calls, in percent."""
    if not engine or any(e is None for e in engine) or not sum(e for e in engine if e):
        return None
    return 100.0 * (sum(timed) / sum(e for e in engine if e is not None) - 1.0)


def short_energy_windows(window_s: list[float]) -> str:
    """A warning when a repetition's energy window (its decode) is shorter than MIN_ENERGY_WINDOW_S, within a
    few updates of NVML's energy counter ('' otherwise)."""
    short = [s for s in window_s if s < MIN_ENERGY_WINDOW_S]
    if not short:
        return ""
    return (
        f"energy per token from {len(short)} decode window(s) of {min(short):.2f}-{max(short):.2f} s, under "
        f"{MIN_ENERGY_WINDOW_S:g} s (10 NVML updates): coarse; raise gen_tokens for a finer figure"
    )


def per_sequence_latencies(repetition: Repetition, n_seq: int) -> tuple[list[float], list[float]]:
    """Each sequence's (time to first token, time per output token) in ms, as MLPerf defines them per request:
    TTFT when the prefill batch holding its last prompt token is done; TPOT = (its last token - its first
    token) / (output tokens - 1), i.e. the rest of the prefill after its first token plus every decode step,
    over the decode steps (the first token comes from the prefill)."""
    ready = repetition.ready_s or [repetition.prefill_s] * n_seq
    decode_s = sum(repetition.decode_token_s)
    steps = len(repetition.decode_token_s)
    ttft = [1000.0 * r for r in ready]
    tpot = [1000.0 * (repetition.prefill_s - r + decode_s) / steps for r in ready] if steps else []
    return ttft, tpot


def repetition_fields(cell: Cell, warmups: list[Repetition], measured: list[Repetition]) -> dict[str, Any]:
    """Row fields from the repetitions (pure: no backend involved). With `parallel` N the tok/s figures are
    aggregates over the N sequences; decode_tok_s_per_seq is what each user sees; ttft_ms_* is the whole
    batched prefill (the last sequence's first token); *_per_seq_samples hold each sequence's TTFT and time per
    output token of every repetition (per_sequence_latencies); ITL percentiles are decode-step latencies."""
    n_seq = cell.setting("parallel")
    per_seq = [per_sequence_latencies(r, n_seq) for r in measured]
    prefill = [n_seq * cell.prompt_tokens / r.prefill_s for r in measured]
    decode = [n_seq * len(r.decode_token_s) / sum(r.decode_token_s) for r in measured]
    ttft_ms = [1000.0 * r.prefill_s for r in measured]
    itl_ms = [1000.0 * s for r in measured for s in r.decode_token_s]
    per_rep_itl = {
        pct: [percentile([1000.0 * s for s in r.decode_token_s], pct) for r in measured] for pct in (50, 90, 99)
    }
    pp, tg, ttft = summarize(prefill), summarize(decode), summarize(ttft_ms)
    warnings = []
    if pp.unstable:
        warnings.append(f"prefill spread {pp.cv_pct:.1f}% CV over {pp.n} reps")
    if tg.unstable:
        warnings.append(f"decode spread {tg.cv_pct:.1f}% CV over {tg.n} reps")
    energies = [r.decode_energy_j for r in measured]
    measured_energy = bool(energies) and all(e is not None for e in energies)
    if measured_energy and (short := short_energy_windows([sum(r.decode_token_s) for r in measured])):
        warnings.append(short)
    energy_per_token = (
        [e / (n_seq * len(r.decode_token_s)) for e, r in zip(energies, measured, strict=True)]
        if measured_energy
        else []
    )  # type: ignore[operator]
    return {
        "energy_j_per_decode_token": sum(energy_per_token) / len(energy_per_token) if energy_per_token else None,
        "energy_j_per_decode_token_samples": samples_to_text(energy_per_token),
        "prefill_tok_s_mean": pp.mean,
        "prefill_tok_s_std": pp.std,
        "prefill_tok_s_median": pp.median,
        "prefill_tok_s_cv_pct": pp.cv_pct,
        "decode_tok_s_mean": tg.mean,
        "decode_tok_s_std": tg.std,
        "decode_tok_s_median": tg.median,
        "decode_tok_s_cv_pct": tg.cv_pct,
        "decode_tok_s_per_seq_mean": tg.mean / n_seq,
        "ttft_ms_mean": ttft.mean,
        "ttft_ms_median": ttft.median,
        "itl_ms_p50": percentile(itl_ms, 50),
        "itl_ms_p90": percentile(itl_ms, 90),
        "itl_ms_p99": percentile(itl_ms, 99),
        "prefill_tok_s_samples": samples_to_text(prefill),
        "decode_tok_s_samples": samples_to_text(decode),
        "ttft_ms_samples": samples_to_text(ttft_ms),
        "ttft_ms_per_seq_samples": samples_to_text(t for ttft_seq, _ in per_seq for t in ttft_seq),
        "tpot_ms_per_seq_samples": samples_to_text(t for _, tpot_seq in per_seq for t in tpot_seq),
        "decode_context_tokens": decode_context_tokens(cell),
        **{f"itl_ms_p{pct}_samples": samples_to_text(values) for pct, values in per_rep_itl.items()},
        "prefill_overhead_pct": _overhead_pct([r.prefill_s for r in measured], [r.engine_prefill_s for r in measured]),
        "decode_overhead_pct": _overhead_pct(
            [sum(r.decode_token_s) for r in measured], [r.engine_decode_s for r in measured]
        ),
        "warmup_prefill_tok_s": samples_to_text(n_seq * cell.prompt_tokens / r.prefill_s for r in warmups),
        "warmup_decode_tok_s": samples_to_text(n_seq * len(r.decode_token_s) / sum(r.decode_token_s) for r in warmups),
        "unstable": pp.unstable or tg.unstable,
        "warnings": "; ".join(warnings),
    }


def measure_fields(engine: Engine, cell: Cell, energy: EnergyMeter | None = None) -> dict[str, Any]:
    """A cell's speed fields from either kind of engine: a CellEngine measures itself; a SpeedEngine's steps are
    timed by measure_cell. Then its energy fields (bench.runners.cell_energy: RAPL where a CPU cell has no GPU
    sampler) and, with workload.sustain_s, the sustained mode (bench.runners.sustain)."""
    # RAPL only where this process does the work: a CellEngine may measure a server on another machine.
    meter = cell_energy(cell, energy, rapl=isinstance(engine, SpeedEngine))
    if isinstance(engine, CellEngine):
        # a served request's answer follows its prompt too
        fields = {"decode_context_tokens": decode_context_tokens(cell), **engine.measure(cell, meter.meter)}
        chunks = engine.sustain_chunks(cell) if cell.sustain_s else None
    elif isinstance(engine, SpeedEngine):
        warmups, measured = measure_cell(engine, cell, energy=meter.meter)
        fields = repetition_fields(cell, warmups, measured)
        chunks = decode_chunks(engine, cell)
    else:
        raise TypeError(f"{type(engine).__name__} is neither a SpeedEngine nor a CellEngine")
    fields.update(energy_fields(meter, fields))
    if cell.sustain_s:
        fields.update(sustained_fields(chunks, cell, engine.backend))
    return fields

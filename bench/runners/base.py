"""The contract every backend implements, and the one timing loop they all share.

A backend knows how to load a model, size a context for a cell, fill the KV cache,
and time a prefill and single-token decodes (synchronizing its device before the
clock stops). The measurement protocol (warm-ups kept apart, repetitions, TTFT,
inter-token latency) lives here once, so every backend measures the same thing.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from bench.suite import Cell


@dataclass
class LoadInfo:
    load_s: float
    n_params: int | None = None
    model_file_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # row fields the backend knows (arch, layers, ...)


@dataclass
class Repetition:
    prefill_s: float
    first_token_s: float
    decode_token_s: list[float]
    decode_energy_j: float | None = None  # from the device's energy counter, decode phase only


class EnergyMeter(Protocol):
    def mark(self) -> None: ...
    def energy_j_since_mark(self) -> float | None: ...


class Runner(abc.ABC):
    """One loaded model on one device. Created and used inside a worker process only."""

    backend: ClassVar[str]

    @abc.abstractmethod
    def load(self) -> LoadInfo: ...

    @abc.abstractmethod
    def start_context(self, cell: Cell) -> dict[str, Any]:
        """Make a context fit for the cell (threads, batch, KV type, n_ctx). Returns row fields (n_ctx, kv bytes)."""

    @abc.abstractmethod
    def n_vocab(self) -> int: ...

    @abc.abstractmethod
    def bos_token(self) -> int | None:
        """The token a sequence starts with, or None if the model adds none."""

    @abc.abstractmethod
    def reset(self, depth_tokens: np.ndarray) -> None:
        """Clear the KV cache and fill it with these tokens (not timed)."""

    @abc.abstractmethod
    def truncate(self, n_keep: int) -> bool:
        """Drop cache positions >= n_keep. False if the cache type cannot (then reset() is used)."""

    @abc.abstractmethod
    def prefill(self, tokens: np.ndarray) -> float:
        """Process tokens as batches after the current cache; seconds until the device is done."""

    @abc.abstractmethod
    def decode(self, tokens: np.ndarray) -> list[float]:
        """Process tokens one at a time; seconds for each, device synchronized."""

    # ------------------------------------------------------------ quality (bench.quality, bench.tasks)
    @abc.abstractmethod
    def tokenize(self, text: str, add_bos: bool = True) -> np.ndarray:
        """Token ids (int32) of text; add_bos: start with the model's BOS token if the model uses one."""

    @abc.abstractmethod
    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits at every position of `tokens` as one fresh sequence: float32 [len(tokens), n_vocab]."""

    def prepare_logits(self, n_ctx: int, cell: Cell) -> None:  # noqa: B027 - optional hook
        """Get ready for logits()/generate_greedy() on up to n_ctx tokens. Default: nothing to do."""

    def detokenize(self, tokens: np.ndarray) -> str:
        """Text of generated tokens (special tokens dropped); generation tasks need it."""
        from bench.errors import BenchError

        raise BenchError(f"backend {self.backend} cannot turn tokens back into text, so it cannot score "
                         "generation tasks; use multiple-choice tasks with it")

    def generate_greedy(self, tokens: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Up to max_new_tokens tokens, each the most probable next one; backends with a KV cache override it."""
        sequence = np.asarray(tokens, dtype=np.int32)
        generated: list[int] = []
        for _ in range(max_new_tokens):
            generated.append(int(np.argmax(self.logits(np.append(sequence, generated).astype(np.int32))[-1])))
        return np.asarray(generated, dtype=np.int32)

    def memory_fields(self) -> dict[str, Any]:
        """Device-side memory the backend can read (peak VRAM, KV bytes). Default: nothing."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free the model and context."""


def random_tokens(rng: np.random.Generator, n_vocab: int, count: int, first: int | None) -> np.ndarray:
    """Random tokens, as llama-bench uses: content does not change the cost of a dense forward pass."""
    tokens = rng.integers(0, n_vocab, size=count, dtype=np.int32)
    if first is not None and count > 0:
        tokens[0] = first
    return tokens


def measure_cell(
    runner: Runner, cell: Cell, energy: EnergyMeter | None = None, seed: int = 1234
) -> tuple[list[Repetition], list[Repetition]]:
    """Warm-ups, then repetitions, of: depth fill (untimed), timed prefill, first token, timed decode.

    Prefill is measured after `depth` cached tokens; decode too starts at `depth` (the prompt is
    dropped from the cache first), matching llama-bench's pp/tg tests at `-d depth`. TTFT is the
    prefill plus the first generated token. Returns (warmups, measured).
    """
    rng = np.random.default_rng(seed)
    n_vocab = runner.n_vocab()
    bos = runner.bos_token()
    depth_tokens = random_tokens(rng, n_vocab, cell.depth, bos)
    warmups: list[Repetition] = []
    measured: list[Repetition] = []
    for index in range(cell.warmup + cell.repetitions):
        prompt = random_tokens(rng, n_vocab, cell.prompt_tokens, bos if cell.depth == 0 else None)
        generated = random_tokens(rng, n_vocab, cell.gen_tokens + 1, None)
        runner.reset(depth_tokens)
        prefill_s = runner.prefill(prompt)
        first_token_s = runner.decode(generated[:1])[0]
        if not runner.truncate(cell.depth):
            runner.reset(depth_tokens)
        if energy is not None:
            energy.mark()
        decode_s = runner.decode(generated[1:])
        decode_j = energy.energy_j_since_mark() if energy is not None else None
        (warmups if index < cell.warmup else measured).append(
            Repetition(prefill_s, first_token_s, decode_s, decode_j)
        )
    return warmups, measured


def repetition_fields(cell: Cell, warmups: list[Repetition], measured: list[Repetition]) -> dict[str, Any]:
    """Row fields from the repetitions (pure: no backend involved)."""
    from bench.results import samples_to_text
    from bench.stats import percentile, summarize

    prefill = [cell.prompt_tokens / r.prefill_s for r in measured]
    decode = [len(r.decode_token_s) / sum(r.decode_token_s) for r in measured]
    ttft_ms = [1000.0 * (r.prefill_s + r.first_token_s) for r in measured]
    itl_ms = [1000.0 * s for r in measured for s in r.decode_token_s]
    pp, tg, ttft = summarize(prefill), summarize(decode), summarize(ttft_ms)
    warnings = []
    if pp.unstable:
        warnings.append(f"prefill spread {pp.cv_pct:.1f}% CV over {pp.n} reps")
    if tg.unstable:
        warnings.append(f"decode spread {tg.cv_pct:.1f}% CV over {tg.n} reps")
    energies = [r.decode_energy_j for r in measured]
    energy_per_token = (
        sum(energies) / sum(len(r.decode_token_s) for r in measured)  # type: ignore[arg-type]
        if energies and all(e is not None for e in energies) else None
    )
    return {
        "energy_j_per_decode_token": energy_per_token,
        "prefill_tok_s_mean": pp.mean, "prefill_tok_s_std": pp.std, "prefill_tok_s_median": pp.median,
        "prefill_tok_s_cv_pct": pp.cv_pct,
        "decode_tok_s_mean": tg.mean, "decode_tok_s_std": tg.std, "decode_tok_s_median": tg.median,
        "decode_tok_s_cv_pct": tg.cv_pct,
        "ttft_ms_mean": ttft.mean, "ttft_ms_median": ttft.median,
        "itl_ms_p50": percentile(itl_ms, 50), "itl_ms_p90": percentile(itl_ms, 90),
        "itl_ms_p99": percentile(itl_ms, 99),
        "prefill_tok_s_samples": samples_to_text(prefill),
        "decode_tok_s_samples": samples_to_text(decode),
        "ttft_ms_samples": samples_to_text(ttft_ms),
        "warmup_prefill_tok_s": samples_to_text(cell.prompt_tokens / r.prefill_s for r in warmups),
        "warmup_decode_tok_s": samples_to_text(len(r.decode_token_s) / sum(r.decode_token_s) for r in warmups),
        "unstable": pp.unstable or tg.unstable,
        "warnings": "; ".join(warnings),
    }

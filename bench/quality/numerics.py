"""Pure numerics of quality: log-softmax, perplexity, chunking, the baseline's compact form, KLD estimators.

Perplexity is measured as llama.cpp's `llama-perplexity` measures it: the whole text is tokenized once (with
BOS if the model adds one), cut into chunks of `context` tokens, each chunk evaluated as a fresh sequence with
its first token replaced by BOS (when the model uses one), and only the second half of each chunk is scored,
so every scored token sees at least context/2 tokens before it.

KL divergence compares each position's next-token distribution with the baseline's. The baseline is kept per
position as its top-k log-probabilities (+ token ids), the log of the probability mass outside the top k, k
tokens sampled from that remaining mass (systematic sampling, seeded) with their log-probabilities, and the
log-probability of the true next token: tokens x k numbers, not tokens x vocabulary. Two estimates come from it:

- the mean: the exact sum over the top k + the tail mass as one bucket + the tail's own divergence, estimated
  without bias from the samples. Each position's figure carries the samples' noise, which averages out in the
  mean but not in the quantiles (they spread out: upper ones overshoot) and can even come out negative;
- the quantiles (median, p99, max): a deterministic figure per position, the top k + one tail bucket (the
  baseline's remaining mass against the model's mass over the same tokens), clamped at 0. It is a lower bound
  of each position's KLD, so its quantiles are lower bounds of the true ones.

Measured against the exact KLD (whole vocabulary) on the built-in text, context 512, 1,020 positions, top 64,
Q8_0 / Q4_K_M / Q2_K against F16 (tests/benchmarks/test_kld_estimates.py prints these): SmolLM2-135M (6 % of the
mass outside the top 64 on average) - mean within 0.1 %, p99 0.2-0.5 % low, median 10-13 % low; Gemma-3-270M
(13 % outside) - mean within 1.3 %, p99 2.5-12 % low, median 21-27 % low. The bucket alone would put the
mean 6-7 % (SmolLM2) to 18-20 % (Gemma) low, hence the sampled tail term for the mean.

Every function here takes numpy arrays and returns numbers; nothing reads files or runs a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax (float64 out), with llama-perplexity's arithmetic: float exp, double sum."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    sum_exp = np.exp(shifted).sum(axis=-1, dtype=np.float64, keepdims=True)
    return shifted.astype(np.float64) - np.log(sum_exp)


# ---------------------------------------------------------------- chunks of the evaluation text


def first_scored_row(n_ctx: int) -> int:
    """Rows [n_ctx//2, n_ctx-1) of a chunk's logits are scored; row j predicts the chunk's token j+1."""
    return n_ctx // 2


def scored_per_chunk(n_ctx: int) -> int:
    return n_ctx - 1 - first_scored_row(n_ctx)


def chunk_count(n_tokens: int, n_ctx: int, max_chunks: int) -> int:
    return min(max_chunks, n_tokens // n_ctx)


def chunk_input(tokens: np.ndarray, index: int, n_ctx: int, bos: int | None) -> np.ndarray:
    """Chunk `index` as the model sees it: its first token replaced by BOS when the model uses one."""
    chunk = np.array(tokens[index * n_ctx : (index + 1) * n_ctx], dtype=np.int32)
    if bos is not None:
        chunk[0] = bos
    return chunk


def chunk_targets(tokens: np.ndarray, index: int, n_ctx: int) -> np.ndarray:
    """The true next tokens of the scored rows of chunk `index`."""
    start = index * n_ctx
    return np.asarray(tokens[start + first_scored_row(n_ctx) + 1 : start + n_ctx], dtype=np.int64)


# ---------------------------------------------------------------- the baseline's compact form


@dataclass
class TopK:
    """A baseline's distributions, compactly: per position, the k most probable tokens, the mass of the rest,
    and k tokens drawn from the rest in proportion to their probability."""

    indices: np.ndarray  # int32 [n, k], most probable first (ties: lower token id first)
    logprobs: np.ndarray  # float32 [n, k]
    log_tail: np.ndarray  # float32 [n]: log of the probability mass outside the top k
    tail_indices: np.ndarray  # int32 [n, k]: tokens drawn from outside the top k, weighted by probability
    tail_logprobs: np.ndarray  # float32 [n, k]: their log-probabilities
    target_logprob: np.ndarray  # float32 [n]: log-probability of the true next token

    FIELDS: ClassVar[tuple[str, ...]] = (
        "indices",
        "logprobs",
        "log_tail",
        "tail_indices",
        "tail_logprobs",
        "target_logprob",
    )

    def rows(self, start: int, stop: int) -> TopK:
        return TopK(*(getattr(self, name)[start:stop] for name in self.FIELDS))

    @staticmethod
    def concat(parts: list[TopK]) -> TopK:
        return TopK(*(np.concatenate([getattr(p, name) for p in parts]) for name in TopK.FIELDS))


def as_stored(values: np.ndarray) -> np.ndarray:
    """Round to the float32 the cache stores, so the baseline compared with itself gives exactly zero."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def log_mass_outside(logprobs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """log(sum of probabilities of every token not in `indices`), per row, computed stably."""
    rest = np.array(logprobs, dtype=np.float32)
    np.put_along_axis(rest, indices.astype(np.int64), -np.inf, axis=1)
    peak = rest.max(axis=1).astype(np.float64)
    finite = np.isfinite(peak)
    safe_peak = np.where(finite, peak, 0.0)
    with np.errstate(divide="ignore"):
        sum_exp = np.exp(rest - safe_peak[:, None].astype(np.float32)).sum(axis=1, dtype=np.float64)
        total = np.log(sum_exp) + safe_peak
    return np.where(finite, total, -np.inf)


def sample_tail(logprobs: np.ndarray, indices: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Per row, `count` tokens outside `indices` drawn in proportion to their probability.

    Systematic sampling (evenly spaced points with one random offset per row, over the cumulative
    distribution in token-id order): unbiased for expectations, with less variance than independent draws.
    """
    n_rows, n_vocab = logprobs.shape
    probs = np.exp(np.asarray(logprobs, dtype=np.float32))
    np.put_along_axis(probs, indices.astype(np.int64), 0.0, axis=1)
    cumulative = np.cumsum(probs, axis=1, dtype=np.float64)
    cumulative /= np.maximum(cumulative[:, -1:], np.finfo(np.float64).tiny)
    points = (np.arange(count)[None, :] + rng.random((n_rows, 1))) / count
    # One searchsorted for all rows: shift row r's cumulative values (within [0, 1]) by r.
    shift = np.arange(n_rows)[:, None]
    flat = np.searchsorted((cumulative + shift).ravel(), (points + shift).ravel(), side="right")
    return np.clip(flat.reshape(n_rows, count) - shift * n_vocab, 0, n_vocab - 1).astype(np.int32)


def top_k_summary(logprobs: np.ndarray, targets: np.ndarray, k: int, rng: np.random.Generator) -> TopK:
    """Compress log-prob rows: top k, mass of the rest, k samples of the rest, the true token's log-prob."""
    k = min(k, logprobs.shape[1] - 1)
    part = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(logprobs, part, axis=1)
    order = np.lexsort((part, -values), axis=1)  # by probability, then token id: deterministic under ties
    indices = np.take_along_axis(part, order, axis=1)
    tail_indices = sample_tail(logprobs, indices, k, rng)
    return TopK(
        indices=indices.astype(np.int32),
        logprobs=np.take_along_axis(values, order, axis=1).astype(np.float32),
        log_tail=log_mass_outside(logprobs, indices).astype(np.float32),
        tail_indices=tail_indices,
        tail_logprobs=np.take_along_axis(logprobs, tail_indices.astype(np.int64), axis=1).astype(np.float32),
        target_logprob=logprobs[np.arange(len(targets)), targets].astype(np.float32),
    )


# ---------------------------------------------------------------- comparing a model with the baseline


@dataclass
class KldRows:
    """Two per-position estimates of KL(baseline || model): one for the mean, one for the quantiles."""

    unbiased: np.ndarray  # expectation = the exact KLD; noisy per position (the tail's samples)
    bucketed: np.ndarray  # deterministic: top k + one tail bucket, clamped at 0; a lower bound per position


def kld_estimates(base: TopK, logprobs: np.ndarray) -> KldRows:
    """KL(baseline || model) per row, from the baseline's compact form and the model's full log-prob rows.

    KL = sum over the top k of p (log p - log q)  +  P_tail log(P_tail / Q_tail)  +  P_tail KL(p~ || q~),
    where Q_tail is the model's mass over the tokens outside the baseline's top k and p~, q~ are both
    distributions renormalized over that tail. The last term is the mean log-ratio over the tail samples
    (drawn from p~): `unbiased` includes it, `bucketed` (the k+1-bucket KLD) leaves it out.
    """
    base_lp = base.logprobs.astype(np.float64)
    model_lp = as_stored(np.take_along_axis(logprobs, base.indices.astype(np.int64), axis=1))
    head = (np.exp(base_lp) * (base_lp - model_lp)).sum(axis=1)
    base_tail = base.log_tail.astype(np.float64)
    model_tail = as_stored(log_mass_outside(logprobs, base.indices))
    model_samples = as_stored(np.take_along_axis(logprobs, base.tail_indices.astype(np.int64), axis=1))
    tail_p = np.exp(base_tail)
    with np.errstate(invalid="ignore"):
        bucket = np.where(tail_p > 0, tail_p * (base_tail - model_tail), 0.0)
        within_tail = (
            (base.tail_logprobs.astype(np.float64) - base_tail[:, None]) - (model_samples - model_tail[:, None])
        ).mean(axis=1)
        correction = np.where(tail_p > 0, tail_p * within_tail, 0.0)
    # The bucketed KLD of two distributions is >= 0; float32 rounding of stored values can dip below.
    return KldRows(unbiased=head + bucket + correction, bucketed=np.maximum(head + bucket, 0.0))


def exact_kld(base_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(baseline || model) per row over the whole vocabulary (for tests of the estimates)."""
    base = np.asarray(base_logprobs, dtype=np.float64)
    return (np.exp(base) * (base - np.asarray(logprobs, dtype=np.float64))).sum(axis=1)


def same_top_token(base: TopK, logprobs: np.ndarray) -> np.ndarray:
    """Per row, whether the model's most probable token is the baseline's."""
    return np.argmax(logprobs, axis=1) == base.indices[:, 0]


# ---------------------------------------------------------------- statistics


def mean_and_stderr(values: np.ndarray, min_count: int = 2) -> tuple[float, float]:
    """Mean and its standard error as llama-perplexity computes them (0 below min_count values)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    variance = float((values**2).mean() - mean * mean)
    stderr = float(np.sqrt(variance / (n - 1))) if variance > 0 and n >= min_count else 0.0
    return mean, stderr


def perplexity(nll: np.ndarray) -> tuple[float, float]:
    """exp(mean negative log-likelihood) and its standard error (llama-perplexity's 'Final estimate')."""
    mean, stderr = mean_and_stderr(nll)
    ppl = float(np.exp(mean))
    return ppl, ppl * stderr


def quantiles(values: np.ndarray) -> dict[str, float]:
    """Median, 99th percentile (linear interpolation, as llama-perplexity's) and maximum."""
    return {"median": float(np.median(values)), "p99": float(np.percentile(values, 99)), "max": float(np.max(values))}


@dataclass
class Positions:
    """Per scored position: the model's figures, and the comparison with the baseline when there is one."""

    nll: np.ndarray
    kld: KldRows | None = None
    same_top: np.ndarray | None = None  # bool: the model's most probable token is the baseline's
    base_nll: np.ndarray | None = None


def comparison_fields(positions: Positions) -> dict[str, float]:
    """The KLD block of llama-perplexity --kl-divergence, as result-row fields."""
    if positions.kld is None or positions.same_top is None or positions.base_nll is None:
        return {}
    kld_mean, kld_stderr = mean_and_stderr(positions.kld.unbiased, min_count=11)
    spread = quantiles(positions.kld.bucketed)
    nll = as_stored(positions.nll)  # the precision the baseline's figures were stored at
    p_diff = np.exp(-nll) - np.exp(-positions.base_nll)
    return {
        "ppl_ratio": float(np.exp(nll.mean() - positions.base_nll.mean())),
        "kld_mean": kld_mean,
        "kld_stderr": kld_stderr,
        "kld_median": spread["median"],
        "kld_p99": spread["p99"],
        "kld_max": spread["max"],
        "top1_agreement_pct": 100.0 * float(np.mean(positions.same_top)),
        "dp_correct_mean_pct": 100.0 * float(p_diff.mean()),
        "dp_correct_rms_pct": 100.0 * float(np.sqrt(np.mean(p_diff**2))),
    }

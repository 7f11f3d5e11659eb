"""A cell's row fields from its requests' records (pure). Percentiles are over every measured request (or, for
ITL, every inter-token gap); tok/s figures per round are all users' output tokens over the round's wall time
(first send to last end); per user is that divided by the users."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bench.results import samples_to_text
from bench.runners.server.stream import RequestRecord
from bench.stats import percentile, summarize

PERCENTILES = (50, 90, 99)


def ms_percentiles(name: str, values_s: Sequence[float]) -> dict[str, float | None]:
    values_ms = [1000.0 * v for v in values_s]
    return {f"{name}_p{p}": percentile(values_ms, p) if values_ms else None for p in PERCENTILES}


def _median(values: Sequence[float]) -> float | None:
    return summarize(values).median if values else None


def _round_tok_s(records: Sequence[RequestRecord]) -> float | None:
    span = max(r.end_s for r in records) - min(r.sent_s for r in records)
    tokens = sum(r.output_tokens for r in records if r.ok)
    return tokens / span if span > 0 and tokens else None


def _overheads(ok: Sequence[RequestRecord]) -> dict[str, float | None]:
    """Client minus server: TTFT vs the server's prompt_ms, TPOT vs its predicted_per_token_ms (llama-server)."""
    timed = [r for r in ok if "prompt_ms" in r.server_timings and r.ttft_s is not None]
    ttft = [1000.0 * r.ttft_s - r.server_timings["prompt_ms"] for r in timed if r.ttft_s is not None]
    per_token = [
        1000.0 * r.tpot_s - r.server_timings["predicted_per_token_ms"]
        for r in timed
        if r.tpot_s is not None and "predicted_per_token_ms" in r.server_timings
    ]
    return {
        "server_prompt_ms_p50": _median([r.server_timings["prompt_ms"] for r in timed]),
        "server_predicted_per_token_ms_p50": _median(
            [r.server_timings["predicted_per_token_ms"] for r in timed if "predicted_per_token_ms" in r.server_timings]
        ),
        "http_overhead_ttft_ms": _median(ttft),
        "http_overhead_tpot_ms": _median(per_token),
    }


def _cached_tokens(record: RequestRecord) -> int | None:
    """Prompt tokens the server took from its cache: `usage.prompt_tokens_details.cached_tokens` (OpenAI, vLLM),
    else llama-server's `timings.cache_n`; None when it says neither."""
    details = record.usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    cache_n = record.server_timings.get("cache_n")
    return int(cache_n) if cache_n is not None else None


def _known(values: Iterable[int | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


def _warnings(measured: Sequence[RequestRecord], gen_tokens: int, ignore_eos: bool) -> list[str]:
    warnings = []
    errors = [r for r in measured if not r.ok]
    if errors:
        warnings.append(f"{len(errors)} of {len(measured)} requests failed; first: {errors[0].error}")
    short = [r for r in measured if r.ok and r.output_tokens < gen_tokens]
    if ignore_eos and short:
        warnings.append(
            f"output length not held: {len(short)} of {len(measured)} answers ended before {gen_tokens} tokens "
            "(the server ignored ignore_eos/min_tokens)"
        )
    return warnings


def request_fields(
    records: Sequence[RequestRecord], users: int, prompt_tokens: int, gen_tokens: int, ignore_eos: bool
) -> dict[str, Any]:
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    rounds: dict[int, list[RequestRecord]] = {}
    for record in measured:
        rounds.setdefault(record.index, []).append(record)
    per_round = [v for v in (_round_tok_s(rs) for _, rs in sorted(rounds.items())) if v is not None]
    warm_rounds: dict[int, list[RequestRecord]] = {}
    for record in records:
        if record.warmup:
            warm_rounds.setdefault(record.index, []).append(record)
    warm = [v for v in (_round_tok_s(rs) for _, rs in sorted(warm_rounds.items())) if v is not None]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    prefill = [prompt_tokens / t for t in ttft if t > 0]
    decode = summarize(per_round) if per_round else None
    span = max(r.end_s for r in measured) - min(r.sent_s for r in measured) if measured else 0.0
    warnings = _warnings(measured, gen_tokens, ignore_eos)
    if decode is not None and decode.unstable:
        warnings.append(f"output tok/s spread {decode.cv_pct:.1f}% CV over {decode.n} rounds")
    pp = summarize(prefill) if prefill else None
    return {
        # what one request's prompt costs: its tokens over its time to first token (per user)
        "prefill_tok_s_mean": pp.mean if pp else None,
        "prefill_tok_s_std": pp.std if pp else None,
        "prefill_tok_s_median": pp.median if pp else None,
        "prefill_tok_s_cv_pct": pp.cv_pct if pp else None,
        "prefill_tok_s_samples": samples_to_text(prefill),
        "decode_tok_s_mean": decode.mean if decode else None,
        "decode_tok_s_std": decode.std if decode else None,
        "decode_tok_s_median": decode.median if decode else None,
        "decode_tok_s_cv_pct": decode.cv_pct if decode else None,
        "decode_tok_s_per_seq_mean": decode.mean / users if decode else None,
        "decode_tok_s_samples": samples_to_text(per_round),
        "warmup_decode_tok_s": samples_to_text(warm),
        "ttft_ms_mean": 1000.0 * summarize(ttft).mean if ttft else None,
        "ttft_ms_median": 1000.0 * summarize(ttft).median if ttft else None,
        "ttft_ms_samples": samples_to_text(1000.0 * t for t in ttft),
        # each request is one user's turn: the samples the SLO's percentile is judged on (as the engine's per
        # sequence and repetition)
        "ttft_ms_per_seq_samples": samples_to_text(1000.0 * t for t in ttft),
        "tpot_ms_per_seq_samples": samples_to_text(1000.0 * t for r in ok if (t := r.tpot_s) is not None),
        **ms_percentiles("ttft_ms", ttft),
        **ms_percentiles("answer_ttft_ms", [t for r in ok if (t := r.answer_ttft_s) is not None]),
        **ms_percentiles("itl_ms", [g for r in ok for g in r.gaps_s]),
        **ms_percentiles("tpot_ms", [t for r in ok if (t := r.tpot_s) is not None]),
        **ms_percentiles("e2e_ms", [r.e2e_s for r in ok]),
        **_overheads(ok),
        "request_throughput_rps": len(ok) / span if span > 0 else None,
        "requests_measured": len(measured),
        "request_errors": len(measured) - len(ok),
        "requests_truncated": None if ignore_eos else sum(r.finish_reason == "length" for r in ok),
        "cached_prompt_tokens_mean": summarize(cached).mean
        if (cached := _known(_cached_tokens(r) for r in ok))
        else None,
        "reasoning_tokens_mean": summarize([r.reasoning_tokens for r in ok]).mean if ok else None,
        "answer_tokens_mean": summarize([r.answer_tokens for r in ok]).mean if ok else None,
        "unstable": bool(decode and decode.unstable),
        "warnings": "; ".join(warnings),
    }

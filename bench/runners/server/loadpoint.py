"""A load point's row fields from its LoadRun (pure): the request figures of bench.runners.server.fields over
the measured requests, plus what only a load point has - the requests left out at each end, the schedule lag
and CPU use that show whether the client kept up, and the queueing the requests saw at the server.

Measured requests are those sent after the warm-up and before the cool-down (by intended send time);
incomplete ones (cancelled at the point's bound) are counted, never measured. Output tok/s is the measured
requests' output tokens over their window (first measured send to last measured end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from bench.results import samples_to_text
from bench.runners.server.capacity_search import Limits
from bench.runners.server.fields import ms_percentiles, request_fields
from bench.runners.server.openloop import LoadRun, Sent
from bench.stats import goodput_rps, summarize

# The client is the bottleneck (a `client_limited` warning) past either: requests sent this late at p99, or its
# event loop busy this much of one core (it can no longer wake on time).
LAG_LIMIT_MS = 10.0
CLIENT_CPU_LIMIT_PCT = 80.0


@dataclass(frozen=True)
class PointBounds:
    warmup_pct: int
    cooldown_pct: int


def edge_counts(total: int, bounds: PointBounds) -> tuple[int, int]:
    """How many requests the warm-up and the cool-down leave out (rounded up, each at least 0)."""
    return math.ceil(total * bounds.warmup_pct / 100), math.ceil(total * bounds.cooldown_pct / 100)


def split(run: LoadRun, bounds: PointBounds) -> tuple[list[Sent], list[Sent], list[Sent]]:
    """(warm-up, measured, cool-down) in intended-send order; incomplete requests are in none of them."""
    due = sorted(run.sent, key=lambda s: s.intended_s)
    warm, cool = edge_counts(len(due), bounds)
    if warm + cool >= len(due):
        return due, [], []
    return due[:warm], [s for s in due[warm : len(due) - cool] if not s.incomplete], due[len(due) - cool :]


def _queue_s(sent: Sent) -> float | None:
    """Time the request waited before the server began its prompt: client TTFT minus the server's prompt_ms
    (llama-server's `timings`; HTTP overhead included), None where the server does not say."""
    record = sent.record
    prompt_ms = record.server_timings.get("prompt_ms")
    ttft = record.ttft_s
    return None if prompt_ms is None or ttft is None else max(0.0, ttft - prompt_ms / 1000.0)


def client_check(run: LoadRun) -> tuple[dict[str, Any], str]:
    """The client's proof it was not the bottleneck: lag percentiles over every request sent, CPU use, and the
    `client_limited` verdict with its warning ('' when it kept up)."""
    lags = [s.lag_s for s in run.sent if s.record.sent_s]
    lag = ms_percentiles("schedule_lag_ms", lags)
    cpu = run.client_cpu_pct
    p99 = lag["schedule_lag_ms_p99"]
    limited = bool((p99 is not None and p99 > LAG_LIMIT_MS) or (cpu is not None and cpu > CLIENT_CPU_LIMIT_PCT))
    warning = ""
    if limited:
        warning = (
            f"client_limited: the load generator fell behind (schedule lag p99 {p99 or 0:.1f} ms, limit "
            f"{LAG_LIMIT_MS:g}; client CPU {cpu or 0:.0f}% of a core, limit {CLIENT_CPU_LIMIT_PCT:g}%): "
            "the figures measure the client too"
        )
    return {**lag, "client_cpu_pct": cpu, "client_limited": limited}, warning


def load_point_fields(
    run: LoadRun, bounds: PointBounds, gen_tokens: int, ignore_eos: bool, rate_rps: float | None, slo: Limits
) -> dict[str, Any]:
    """The row of one load point. rate_rps: the arrival rate its schedule offered (None: closed loop or all at
    once); slo: the limits its goodput_rps counts requests by (the cell's slo_* knobs)."""
    warm, measured, cool = split(run, bounds)
    incomplete = sum(s.incomplete for s in run.sent)
    # One window, not rounds: request_fields sees the measured requests as one round (index 0), the warm-up
    # ones as the warm-up round.
    records = [replace(s.record, index=0, warmup=True) for s in warm if not s.incomplete]
    records += [replace(s.record, index=0, warmup=False) for s in measured]
    prompts = {s.record.prompt_tokens for s in measured}
    fields = request_fields(records, 1, min(prompts), gen_tokens, ignore_eos) if measured else {}
    if len(prompts) > 1:  # prefill tok/s = prompt / TTFT needs one prompt length; drawn lengths have many
        fields.update({k: None for k in fields if k.startswith("prefill_tok_s_") and k != "prefill_tok_s_samples"})
        fields["prefill_tok_s_samples"] = ""
    ok = [s for s in measured if s.record.ok]
    per_user = [1.0 / t for s in ok if (t := s.record.tpot_s)]
    client, client_warning = client_check(run)
    queue = [q for s in ok if (q := _queue_s(s)) is not None]
    span = max(s.record.end_s for s in measured) - min(s.record.sent_s for s in measured) if measured else None
    timed = [s.record for s in ok if s.record.ttft_s is not None]
    tpot_ms = [1000.0 * t if (t := r.tpot_s) is not None else math.nan for r in timed]
    ttft_ms = [1000.0 * (r.ttft_s or 0.0) for r in timed]
    goodput = goodput_rps(ttft_ms, tpot_ms, span or 0.0, slo.ttft_ms, slo.tpot_ms)
    goodput = goodput if math.isfinite(goodput) else None  # no window: nothing to count over
    warnings = [fields.get("warnings", ""), client_warning]
    if not measured:
        warnings.append(
            f"no request measured: {len(run.sent)} sent, {len(warm)} warm-up and {len(cool)} cool-down left out"
        )
    if incomplete:
        warnings.append(f"{incomplete} requests incomplete (cancelled at the load point's bound)")
    fields.update(
        {
            "decode_tok_s_per_seq_mean": summarize(per_user).mean if per_user else None,
            # a user's time in the system per request: with the arrival rate, Little's law gives users served
            "e2e_ms_mean": 1000.0 * summarize([s.record.e2e_s for s in ok]).mean if ok else None,
            # per measured ok request, aligned with ttft_ms_samples (nan: one token, no time per token)
            "tpot_ms_samples": samples_to_text(tpot_ms),
            "goodput_rps": goodput,
            **ms_percentiles("queue_ms", queue),
            **client,
            "load_rate_rps": rate_rps,
            "load_span_s": span,
            "requests_sent": len(run.sent),
            "requests_warmup": len(warm),
            "requests_cooldown": len(cool),
            "requests_incomplete": incomplete,
            "requests_measured": len(measured),
            "warnings": "; ".join(w for w in warnings if w),
        }
    )
    return fields

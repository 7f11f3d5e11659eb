"""Served load (issue 25) agrees with GuideLLM (PyPI, scripts/guidellm_reference.py) against one llama-server on
SmolLM2 (1 thread, 4 slots, raw completions of 32 prompt and 16 output tokens, greedy):

- open loop: bench's `rate` and `poisson` load points and GuideLLM's `constant` and `poisson` profiles at the same
  rate (70 % of the synchronous rate bench measures first, so requests overlap and queue now and then without
  the server falling behind), rounds interleaved; request throughput, p50 and p99 TTFT and the per-request time
  per output token, each over the same requests of the schedule (the first and last 10 % left out on both
  sides, scripts/guidellm_reference.point_figures), the median ratio held to ±10 % by the agreement rule of
  tests/test_llama_tools.py. At this load a Poisson run's tail follows its draw of arrivals more than anything
  measured (two draws of 12 gave p99 TTFT 4x apart), so each Poisson round draws new arrivals with GuideLLM's
  generator and seed (one worker process: random.Random(seed).expovariate(rate), one draw per request) and
  bench's load point sends the same gaps through its own open-loop client; the test checks GuideLLM sent them.
- sweep: bench's `sweep` and GuideLLM's sweep of the same size find their knee (the first rate point the server
  no longer keeps up with) within one point of each other.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from bench.runners.server.arrivals import profile_of
from bench.runners.server.loadpoint import LAG_LIMIT_MS
from bench.stats import percentile
from scripts.guidellm_reference import (
    Load,
    Shape,
    point_figures,
    run_benchmark,
    run_benchmarks,
    schedule_account,
)
from tests.conftest import cpu_cell
from tests.test_llama_tools import agreement, interleaved_ratios
from tests.test_server_guidellm import _engine, _server_counters, guidellm_tokenizer  # noqa: F401 - the fixture, shared

if TYPE_CHECKING:
    from bench.runners.server.runner import ServerEngine
    from bench.suite import Cell

pytestmark = [pytest.mark.slow, pytest.mark.timing]

PROMPT_TOKENS, OUTPUT_TOKENS = 32, 16
SLOTS = 4
REQUESTS = 12  # per load point, on each side; 10 % (rounded up) left out at each end: 8 measured
EDGE_PCT = 10
LOAD_FRACTION = 0.7  # of the synchronous rate
OPEN_ROUNDS = 5  # the median's distribution-free 95 % interval is then [lowest, highest] round (93.75 %)
OPEN_TOLERANCE = 0.10  # the agreement target for served load
OPEN_FIGURES = ("requests/s", "TTFT p50", "TTFT p99", "time per output token p50")
SERVER_FIGURES = ("server ms per prompt token", "server ms per generated token")
SWEEP_POINTS = 5  # synchronous, throughput, 3 rates between
KEEPS_UP = 0.9  # a rate point the server keeps up with serves at least this share of its offered rate


def _load_cell(load: str, **knobs: Any) -> Cell:
    """A load point of the shared shape."""
    return cpu_cell(
        "server",
        "Q4_1",
        threads=1,
        parallel=SLOTS,
        prompt_tokens=PROMPT_TOKENS,
        gen_tokens=OUTPUT_TOKENS,
        endpoint="completions",
        load=load,
        load_requests=REQUESTS,
        load_duration_s=120,
        load_warmup_pct=EDGE_PCT,
        load_cooldown_pct=EDGE_PCT,
        **knobs,
    )


def _bench_point(engine: ServerEngine, cell: Cell) -> dict[str, Any]:
    row = engine.measure(cell)
    assert row["request_errors"] == 0 and row["requests_incomplete"] == 0, row
    assert not row["client_limited"], row["warnings"]
    return row


def _shape() -> Shape:
    return Shape(PROMPT_TOKENS, OUTPUT_TOKENS, REQUESTS, warmup_requests=0, max_seconds=120)


def guidellm_poisson_offsets(rate: float, count: int, seed: int) -> np.ndarray:
    """GuideLLM 0.8.1's Poisson send times for `seed` with one worker process (scheduler/strategies.py
    AsyncPoissonStrategy: each request's time is the previous one's plus random.Random(seed).expovariate(rate)),
    relative to the first."""
    draw = random.Random(seed)
    times = np.cumsum([draw.expovariate(rate) for _ in range(count)])
    return times - times[0]


def _sent_offsets(benchmark: dict[str, Any]) -> np.ndarray:
    """The send times GuideLLM's schedule targeted, relative to the first."""
    requests = benchmark["requests"]
    targeted = sorted(
        r["info"]["timings"]["targeted_start"] for k in ("successful", "errored", "incomplete") for r in requests[k]
    )
    return np.array(targeted) - targeted[0]


def _guidellm_on_schedule(engine: ServerEngine, tokenizer: Path, load: Load, seed: int) -> dict[str, Any]:
    """A GuideLLM run that kept its schedule (start lag p99 within bench's own client_limited limit, every
    request with a target in the run), run once more if it did not: a run that sent late offered another load.
    (GuideLLM 0.8.1's Poisson start race sends some requests at once: scripts/guidellm_reference.schedule_account;
    one such round read TTFT 8x bench's on the same arrivals.)"""
    for attempt in (1, 2):
        benchmark = run_benchmark(engine.endpoint.base_url, tokenizer, load, _shape(), seed)
        account = schedule_account(benchmark)
        lag_ms = 1000.0 * percentile(account.start_lag_s, 99) if account.start_lag_s else float("inf")
        if lag_ms <= LAG_LIMIT_MS and not account.unscheduled:
            return benchmark
        print(f"GuideLLM run {attempt} at {load}: lag p99 {lag_ms:.0f} ms, {account.unscheduled} sent unscheduled")
    raise AssertionError(f"GuideLLM did not keep its schedule twice (lag p99 {lag_ms:.0f} ms): the machine is busy")


@pytest.mark.parametrize("kind", ["constant", "poisson"])
def test_open_loop_figures_agree_with_guidellm(
    smollm2_path: Path,
    guidellm_tokenizer: Path,  # noqa: F811
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench_kind = {"constant": "rate", "poisson": "poisson"}[kind]
    # Round k's seed on each side: each round calls each side once (in either order), so both draw the same.
    our_rounds, their_rounds = itertools.count(1), itertools.count(1)
    with _engine(smollm2_path, SLOTS) as engine:
        synchronous = _bench_point(engine, _load_cell("concurrency:1"))["request_throughput_rps"]
        rate = round(LOAD_FRACTION * synchronous, 3)

        def ours() -> tuple[float, ...]:
            if kind == "poisson":
                offsets = guidellm_poisson_offsets(rate, REQUESTS, next(our_rounds))
                monkeypatch.setattr("bench.runners.server.served.send_offsets", lambda *_: offsets)
            row = _bench_point(engine, _load_cell(f"{bench_kind}:{rate:g}"))
            return row["request_throughput_rps"], row["ttft_ms_p50"], row["ttft_ms_p99"], row["tpot_ms_p50"]

        def theirs() -> tuple[float, ...]:
            seed = next(their_rounds)
            benchmark = _guidellm_on_schedule(engine, guidellm_tokenizer, Load(kind, rate), seed)
            if kind == "poisson":
                sent = _sent_offsets(benchmark)
                assert sent == pytest.approx(guidellm_poisson_offsets(rate, REQUESTS, seed)[: len(sent)], abs=1e-6)
            found = point_figures(benchmark, EDGE_PCT, EDGE_PCT)
            assert found.prompt_tokens_median == PROMPT_TOKENS and found.output_tokens_median == OUTPUT_TOKENS
            return found.request_rps, found.ttft_ms_median, found.ttft_ms_p99, found.itl_ms_median

        ratios = interleaved_ratios(
            lambda: _with_server_speed(engine, ours), lambda: _with_server_speed(engine, theirs), rounds=OPEN_ROUNDS
        )
    print(f"\nbench / GuideLLM at {kind} {rate:g} requests/s ({synchronous:.3g} synchronous), {OPEN_ROUNDS} rounds")
    problems = [agreement(name, values, OPEN_TOLERANCE) for name, values in zip(OPEN_FIGURES, ratios, strict=False)]
    print("(shown, not held) the server's own times per prompt and per generated token during each tool's runs:")
    for name, values in zip(SERVER_FIGURES, ratios[len(OPEN_FIGURES) :], strict=True):
        agreement(name, values, OPEN_TOLERANCE)
    assert not any(problems), problems


def _with_server_speed(engine: ServerEngine, run: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    """`run`'s figures, then llama-server's own ms per prompt token and per generated token meanwhile (its
    /metrics): a ratio of these apart from 1 is the server running at another speed during one tool's runs (its
    client's CPU use beside a one-thread server), not a difference in what the tools measure."""
    before = _server_counters(engine)
    figures = run()
    after = _server_counters(engine)
    delta = {name: after[name] - before[name] for name in after}
    prompt_ms = 1000.0 * delta["prompt_seconds_total"] / delta["prompt_tokens_total"]
    token_ms = 1000.0 * delta["tokens_predicted_seconds_total"] / delta["tokens_predicted_total"]
    return (*figures, prompt_ms, token_ms)


@dataclass(frozen=True)
class SweepPoint:
    role: str  # synchronous, throughput or rate
    offered_rps: float | None  # a rate point's schedule
    achieved_rps: float
    ttft_ms_p99: float
    tpot_ms_p50: float


def knee(points: list[SweepPoint]) -> int:
    """The knee of a sweep: the 0-based position, among its rate points (in order), of the first one whose
    measured throughput falls below KEEPS_UP of its offered rate; the number of rate points when the server kept
    up with all of them."""
    rates = [p for p in points if p.role == "rate"]
    behind = [i for i, p in enumerate(rates) if p.achieved_rps < KEEPS_UP * (p.offered_rps or 0.0)]
    return behind[0] if behind else len(rates)


def test_knee_rule() -> None:
    def rate(offered: float, achieved: float) -> SweepPoint:
        return SweepPoint("rate", offered, achieved, 0.0, 0.0)

    synchronous = SweepPoint("synchronous", None, 1.0, 0.0, 0.0)
    assert knee([synchronous, rate(1.2, 1.19), rate(1.4, 1.2), rate(1.6, 1.2)]) == 1
    assert knee([synchronous, rate(1.2, 1.19), rate(1.4, 1.39)]) == 2  # kept up throughout
    assert knee([rate(1.2, 1.0)]) == 0


def _bench_sweep(engine: ServerEngine) -> list[SweepPoint]:
    points = []
    for number in range(1, SWEEP_POINTS + 1):
        load = f"sweep:{SWEEP_POINTS}/{number}"
        row = _bench_point(engine, _load_cell(load))
        role = profile_of(load).sweep_role
        points.append(
            SweepPoint(
                role, row["load_rate_rps"], row["request_throughput_rps"], row["ttft_ms_p99"], row["tpot_ms_p50"]
            )
        )
    return points


def _guidellm_sweep(engine: ServerEngine, tokenizer: Path) -> list[SweepPoint]:
    points = []
    for benchmark in run_benchmarks(engine.endpoint.base_url, tokenizer, Load("sweep", SWEEP_POINTS), _shape()):
        strategy = benchmark["config"]["strategy"]
        role = {"synchronous": "synchronous", "throughput": "throughput"}.get(strategy["type_"], "rate")
        edge = 0 if role == "throughput" else EDGE_PCT  # as bench: a burst has no first or last request
        found = point_figures(benchmark, edge, edge)
        points.append(SweepPoint(role, strategy.get("rate"), found.request_rps, found.ttft_ms_p99, found.itl_ms_median))
    return points


def _show(name: str, points: list[SweepPoint]) -> None:
    print(f"{name}: role, offered, achieved requests/s, TTFT p99 ms, time per output token p50 ms; knee {knee(points)}")
    for p in points:
        offered = f"{p.offered_rps:.3g}" if p.offered_rps else "-"
        print(f"  {p.role:12} {offered:>6} {p.achieved_rps:6.3g} {p.ttft_ms_p99:8.0f} {p.tpot_ms_p50:7.1f}")


def test_sweep_finds_guidellms_knee_within_one_point(smollm2_path: Path, guidellm_tokenizer: Path) -> None:  # noqa: F811
    with _engine(smollm2_path, SLOTS) as engine:
        ours = _bench_sweep(engine)
        theirs = _guidellm_sweep(engine, guidellm_tokenizer)
    print()
    _show("bench", ours)
    _show("GuideLLM", theirs)
    assert [p.role for p in ours] == [p.role for p in theirs] == ["synchronous", "throughput", "rate", "rate", "rate"]
    # Both ladders run from their synchronous rate up to their throughput rate (GuideLLM's linspace).
    for points in (ours, theirs):
        offered = [p.offered_rps or 0.0 for p in points[2:]]
        assert offered == sorted(offered) and offered[-1] == pytest.approx(offered[0] + 2 * (offered[1] - offered[0]))
    # The ends each ladder is spread between: one measurement each per tool, so held loosely (a shared machine's
    # speed moves by 10 % between runs); the old burst count (12 - 2 x 10 % over the span of all 12) read 24 %
    # low, below the synchronous rate.
    for role, (a, b) in zip(("synchronous", "throughput"), zip(ours[:2], theirs[:2], strict=True), strict=True):
        assert a.achieved_rps == pytest.approx(b.achieved_rps, rel=0.15), (role, a, b)
    assert abs(knee(ours) - knee(theirs)) <= 1, (knee(ours), knee(theirs))

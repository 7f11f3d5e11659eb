"""Served load (the `load` knob): schedules, the sweep's points, the client's lag accounting, bounded loops and
clean cancellation, and load points against the fake OpenAI server on loopback."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.errors import BenchError
from bench.runners.registry import quantization_catalog
from bench.runners.server.arrivals import profile_of, send_offsets, sweep_rates
from bench.runners.server.capacity_search import MAX_PROBES, RESOLUTION_FRACTION, Limits, Probe, search_capacity
from bench.runners.server.client import Endpoint
from bench.runners.server.lengths import DEEPSEEK_R1_MAX, DEEPSEEK_R1_MEAN, draw_lengths
from bench.runners.server.loadpoint import LAG_LIMIT_MS, PointBounds, client_check, split
from bench.runners.server.openloop import CANCELLED, run_closed, run_open
from bench.runners.server.runner import ServerEngine
from bench.runners.server.served import Target
from bench.runners.server.stream import Piece, RequestRecord
from bench.suite import Cell, expand, load_suite
from bench.suite.knobs import KNOBS
from tests.conftest import cpu_cell
from tests.runners.fake_openai_server import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _record(number: int) -> RequestRecord:
    return RequestRecord(user=number, index=number, warmup=False, prompt_tokens=8)


# --- schedules (pure)


def test_poisson_gaps_have_the_rates_mean_and_repeat_per_seed() -> None:
    offsets = send_offsets("poisson", 4.0, 4000, 1e9, seed=7)
    gaps = np.diff(offsets)
    # 4000 exponential gaps of mean 0.25 s: the sample mean's sd is 0.4 %; 3 % is a wide margin, and for this seed
    # the draw is fixed, so the check is exact in practice
    assert abs(gaps.mean() - 0.25) / 0.25 < 0.03
    assert abs(gaps.std() - 0.25) / 0.25 < 0.05  # exponential: sd = mean (constant gaps would fail this)
    assert np.array_equal(offsets, send_offsets("poisson", 4.0, 4000, 1e9, seed=7))
    assert not np.array_equal(offsets, send_offsets("poisson", 4.0, 4000, 1e9, seed=8))


def test_constant_and_throughput_schedules_and_their_bounds() -> None:
    assert send_offsets("rate", 2.0, 5, 100.0, seed=0).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert len(send_offsets("rate", 2.0, 100, 3.0, seed=0)) == 6  # the duration bounds the count: 0 .. 2.5 s
    assert len(send_offsets("poisson", 50.0, 10, 100.0, seed=0)) == 10  # the count bounds the duration
    assert send_offsets("throughput", 0.0, 3, 1.0, seed=0).tolist() == [0.0, 0.0, 0.0]


def test_sweep_rates_follow_guidellm() -> None:
    # GuideLLM's SweepProfile: rates = linspace(synchronous, throughput, K - 1)[1:] for points 3..K
    assert sweep_rates(1.0, 4.0, 5) == pytest.approx([2.0, 3.0, 4.0])
    assert sweep_rates(1.0, 3.0, 3) == pytest.approx([3.0])


def test_load_knob_parses_expands_and_names_mistakes() -> None:
    knob = KNOBS["load"]
    assert knob.parsed({"poisson": 2.5}) == "poisson:2.5" and knob.parsed("rate: 3") == "rate:3"
    assert knob.points(knob.parsed({"sweep": 3})) == ("sweep:3/1", "sweep:3/2", "sweep:3/3")
    assert profile_of("sweep:3/2").sweep_role == "throughput"
    assert "number > 0" in knob.check(knob.parsed({"poisson": -1}))
    assert "whole number" in knob.check(knob.parsed({"concurrency": 1.5}))
    assert "SLO preset" in knob.check(knob.parsed({"capacity": "fast"}))
    assert "expected one of" in knob.check(knob.parsed({"burst": 3}))


def test_a_sweep_is_one_cell_per_point(tmp_path: Path) -> None:
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "name: s\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"
        "knobs: {load: [{sweep: 3}, {poisson: 2}]}\n"
    )
    cells = expand(load_suite(suite_file, quantization_catalog()))
    assert sorted(c.setting("load") for c in cells) == ["poisson:2", "sweep:3/1", "sweep:3/2", "sweep:3/3"]
    assert len({c.cell_id for c in cells}) == 4


def test_a_bad_load_value_is_a_clear_suite_error(tmp_path: Path) -> None:
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(
        "name: s\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\nknobs: {load: {poisson: 0}}\n"
    )
    with pytest.raises(BenchError, match="poisson needs a number > 0"):
        load_suite(suite_file, quantization_catalog())


# --- the client's account (no network: the sender is a coroutine)


def _sender(work_s: float, block_s: float = 0.0) -> Any:
    async def send(record: RequestRecord) -> RequestRecord:
        record.sent_s = time.perf_counter()
        if block_s:
            time.sleep(block_s)  # a client that blocks its own loop: every later send is late
        await asyncio.sleep(work_s)
        record.pieces = [Piece(time.perf_counter(), "x", False)]
        record.end_s = time.perf_counter()
        return record

    return send


@pytest.mark.timing  # an idle client's schedule lag against a blocking one's, measured back to back
def test_lag_is_accounted_and_a_blocking_client_is_flagged() -> None:
    due = list(np.arange(10) * 0.01)
    idle = asyncio.run(run_open(due, 10.0, _record, _sender(0.005)))
    # each send blocks the loop 30 ms while requests are due every 10 ms: each is ~20 ms later than the one before
    blocking = asyncio.run(run_open(due, 10.0, _record, _sender(0.0, block_s=0.03)))
    idle_fields, _ = client_check(idle)
    fields, warning = client_check(blocking)
    assert len(idle.sent) == 10 and not any(s.incomplete for s in idle.sent)
    assert all(s.record.sent_s >= s.intended_s for s in idle.sent)  # one clock: never sent before it was due
    lags = [s.lag_s for s in blocking.sent]
    assert lags[-1] - lags[0] >= 9 * 0.02 * 0.9  # the lag accumulates as the schedule says it must
    assert fields["schedule_lag_ms_p99"] > LAG_LIMIT_MS and fields["client_limited"] and "client_limited" in warning
    assert idle_fields["schedule_lag_ms_p99"] < fields["schedule_lag_ms_p99"] / 5  # the two measured back to back


def test_requests_past_the_bound_are_cancelled_and_none_left_running() -> None:
    async def main() -> tuple[Any, int]:
        run = await run_open([0.0, 0.01, 0.02], 0.1, _record, _sender(60.0))
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return run, len(others)

    started = time.perf_counter()
    run, running = asyncio.run(main())
    assert time.perf_counter() - started < 5.0  # bounded at 2 x duration, not the senders' 60 s
    assert running == 0 and all(s.incomplete and s.record.error == CANCELLED for s in run.sent)


def test_a_closed_loop_is_bounded_by_count_and_time() -> None:
    run = asyncio.run(run_closed(3, 12, 10.0, _record, _sender(0.01)))
    assert len(run.sent) == 12 and sorted(s.record.user for s in run.sent) == list(range(12))
    run = asyncio.run(run_closed(2, 10_000, 0.2, _record, _sender(0.02)))
    assert 2 <= len(run.sent) < 60  # the duration stopped it: ~10 rounds of 2 users


def test_warmup_and_cooldown_are_left_out_by_send_order() -> None:
    run = asyncio.run(run_open(list(np.arange(20) * 0.001), 10.0, _record, _sender(0.001)))
    warm, measured, cool = split(run, PointBounds(10, 20))
    assert [s.record.user for s in warm] == [0, 1] and [s.record.user for s in cool] == [16, 17, 18, 19]
    assert [s.record.user for s in measured] == list(range(2, 16))


# --- load points against the fake server on loopback


def _load_cells(url: str, loads: list[str], **knobs: Any) -> list[Cell]:
    settings: dict[str, Any] = {"server_url": url, "prompt_tokens": 8, "load_duration_s": 10, **knobs}
    return [cpu_cell("server", "source", load=load, **settings) for load in loads]


def _engine_rows(url: str, loads: list[str], **knobs: Any) -> list[dict[str, Any]]:
    """The rows of `loads` measured by one engine against the server at `url` (cells as _load_cells makes them)."""
    cells = _load_cells(url, loads, **knobs)
    engine = ServerEngine(Path("unused.gguf"), cells[0])
    try:
        engine.load()
        rows = []
        for cell in cells:
            engine.start_context(cell)
            rows.append(engine.measure(cell))
        return rows
    finally:
        engine.close()


def test_a_poisson_point_on_the_fake_server(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.02, 0.005
    (row,) = _engine_rows(fake.url, ["poisson:20"], load_requests=20)
    assert row["load_rate_rps"] == 20 and row["requests_sent"] == 20
    assert (row["requests_warmup"], row["requests_cooldown"], row["requests_measured"]) == (2, 2, 16)
    assert row["request_errors"] == 0 and row["requests_incomplete"] == 0 and fake.behaviour.requests == 20
    assert row["ttft_ms_p50"] >= 20 and row["tpot_ms_p99"] >= 5 and row["request_throughput_rps"] > 0
    assert row["schedule_lag_ms_p50"] is not None and row["client_cpu_pct"] is not None
    assert len(row["tpot_ms_samples"].split(";")) == len(row["ttft_ms_samples"].split(";")) == 16


def test_a_concurrency_point_is_a_closed_loop_of_its_users(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.01, 0.002
    (row,) = _engine_rows(fake.url, ["concurrency:3"], load_requests=9)
    assert row["requests_sent"] == 9 and row["requests_measured"] == 7 and row["load_rate_rps"] is None
    assert row["request_errors"] == 0 and fake.behaviour.requests == 9


@pytest.mark.timing  # two measured throughputs compared
def test_a_sweep_measures_synchronous_throughput_then_rates_between(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.02, 0.005
    loads = [f"sweep:4/{p}" for p in (1, 2, 3, 4)]
    sync, burst, middle, top = _engine_rows(fake.url, loads, load_requests=12)
    assert sync["load_rate_rps"] is None and burst["load_rate_rps"] is None
    low, high = sync["request_throughput_rps"], burst["request_throughput_rps"]
    assert high > low > 0  # the fake serves every request at once (a thread each)
    # all sent at once, none is first or last: the burst counts every request over the span they all took
    assert (burst["requests_warmup"], burst["requests_cooldown"], burst["requests_measured"]) == (0, 0, 12)
    assert (sync["requests_warmup"], sync["requests_cooldown"]) == (2, 2)
    assert middle["load_rate_rps"] == pytest.approx((low + high) / 2) and top["load_rate_rps"] == pytest.approx(high)


def test_a_sweep_point_measured_alone_measures_its_ends_first(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.01, 0.002
    (row,) = _engine_rows(fake.url, ["sweep:3/3"], load_requests=6)
    assert row["load_rate_rps"] > 0 and fake.behaviour.requests == 18  # synchronous, throughput, then the point
    assert len(set(fake.behaviour.prompts)) == 18  # each load point its own prompts: no prompt-cache hits between


# --- capacity search


def test_capacity_search_finds_a_known_rate_within_its_resolution() -> None:
    # a server model whose p99 time per token is a known function of the arrival rate: 20 ms / (1 - rate / 10),
    # i.e. 100 ms (the limit) at exactly 8 requests/s; TTFT stays well inside its limit
    probed: list[float] = []

    def probe(rate: float) -> Probe:
        probed.append(rate)
        return Probe(rate, 300.0, 20.0 / (1.0 - rate / 10.0))

    found = search_capacity(probe, 9.5, Limits(2000.0, 100.0), resolution_rps=0.1)
    assert found.rate_rps <= 8.0 < found.rate_rps + found.resolution_rps and found.resolution_rps <= 0.1
    assert found.binding == "tpot" and found.met is not None and found.met.rate_rps == found.rate_rps
    assert len(probed) == len(found.probes) <= MAX_PROBES  # bounded
    assert found.probes_text().startswith("9.5:300.0/")


def test_capacity_search_is_bounded_and_says_when_nothing_met() -> None:
    found = search_capacity(lambda r: Probe(r, 5000.0, 10.0), 4.0, Limits(2000.0, 100.0), 1e-9, max_probes=4)
    assert found.rate_rps == 0.0 and found.met is None and found.binding == "ttft" and len(found.probes) == 4
    unmeasured = search_capacity(lambda r: Probe(r, None, None), 4.0, Limits(2000.0, 100.0), 1.0)
    assert unmeasured.binding == "no ttft+no tpot" and unmeasured.rate_rps == 0.0
    errors = search_capacity(lambda r: Probe(r, 10.0, 10.0, errors=1), 4.0, Limits(2000.0, 100.0), 1.0)
    assert errors.binding == "errors"
    floored = search_capacity(lambda r: Probe(r, 5000.0, 10.0), 4.0, Limits(2000.0, 100.0), 0.01, floor_rps=1.5)
    assert [p.rate_rps for p in floored.probes] == [4.0, 2.0] and floored.resolution_rps == 2.0


def test_capacity_on_a_fake_too_slow_for_the_slo_binds_tpot(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.01, 0.12  # 120 ms per token: over 100 ms at any rate
    fake.behaviour.reasoning, fake.behaviour.answer = 1, 2
    (row,) = _engine_rows(fake.url, ["capacity:mlperf-llama3.1-8b-server"], load_requests=8, load_duration_s=2)
    assert row["capacity_rps"] == 0.0 and row["capacity_binding"] == "tpot"
    assert "no probed rate met the SLO" in row["warnings"]
    # no probe below 5 requests in 2 s: the bracket stops there and says so
    assert all(float(p.split(":")[0]) >= 2.5 for p in row["capacity_probes"].split(";")[1:])
    assert row["capacity_resolution_rps"] > 0


# The fake's law for the end-to-end search: TTFT = FIRST_S + PER_RECENT_S x (earlier arrivals of the load point within
# WINDOW_S). Each probe sends REQUESTS, all measured; the SLO holds at the median, mid-step after STEPS arrivals.
FIRST_S, PER_RECENT_S, WINDOW_S = 0.01, 0.15, 1.0
REQUESTS, PERCENTILE, STEPS = 11, 50, 2  # the median of 11 is one request's figure (no interpolation)
TTFT_LIMIT_MS = 1000.0 * (FIRST_S + PER_RECENT_S * (STEPS + 0.5))
# Arrival jitter moves the law's steps: a pair of requests counts where its gap at the server < WINDOW_S, so a gap
# off the schedule's by e moves that step's rate by e / WINDOW_S. 3 % covers 30 ms: on the shared 2-core machine
# gaps are off by 2-12 ms, and the rarer stalls (40-900 ms) flip a probe only if they fall between the one pair at
# the critical step while the probe's rate is within a few % of the known one. 3 % stays under the resolution (~5 %).
JITTER = 0.03
KNOWN_RPS = (3.8, 4.8)  # the known rates the test takes (see _cell_with_a_known_rate)


def _law_count(seed: int, rate: float, duration_s: float) -> float:
    """The law's count at the SLO's percentile for a Poisson probe: request i counts the j < i sent within
    WINDOW_S before it (the engine's schedule for this seed and rate)."""
    offsets = send_offsets("poisson", rate, REQUESTS, duration_s, seed)
    counts = [int(np.sum(offsets[i] - offsets[:i] < WINDOW_S)) for i in range(len(offsets))]
    return float(np.percentile(counts, PERCENTILE))


def _known_capacity(seed: int, duration_s: float) -> float:
    """The largest rate whose probe meets the law's limit. One seed gives every rate the same unit gaps scaled by
    1 / rate, so a count changes only at a rate where a pair's unit gap equals WINDOW_S x rate, and only grows."""
    unit = send_offsets("poisson", 1.0, REQUESTS, math.inf, seed)
    steps = sorted({(unit[i] - unit[j]) / WINDOW_S for i in range(REQUESTS) for j in range(i)})
    # met up to a step, broken just past it (the limit, in counts, is STEPS + 0.5)
    return next(rate for rate in steps if _law_count(seed, rate * (1 + 1e-9), duration_s) > STEPS + 0.5)


def _cell_with_a_known_rate(url: str, knobs: dict[str, Any]) -> tuple[str, int, float]:
    """The first model name (m0, m1, ...) whose capacity cell's seed gives a known rate within KNOWN_RPS, with
    every request sent at half that rate or more (so each probe's median is one request's figure): the name,
    the seed and the known rate."""
    for model in (f"m{k}" for k in range(100)):
        (cell,) = _load_cells(url, ["capacity"], model_id=model, **knobs)
        seed, duration_s = Target(Endpoint(url), "fake-model", cell).seed, cell.setting("load_duration_s")
        known = _known_capacity(seed, duration_s)
        if (
            KNOWN_RPS[0] <= known <= KNOWN_RPS[1]
            and len(send_offsets("poisson", known / 2, REQUESTS, duration_s, seed)) == REQUESTS
        ):
            return model, seed, known
    raise AssertionError(f"no model name m0..m99 gives a known rate within {KNOWN_RPS}")


@pytest.mark.timing  # a stall of a busy machine between two arrivals can flip a probe's verdict
def test_capacity_against_a_server_whose_ttft_is_a_known_law_of_load(fake: FakeServer) -> None:
    """The whole search (throughput ceiling, bisection of seeded Poisson probes over HTTP, each probe's median
    TTFT) against the fake with TTFT = 10 ms + 150 ms per earlier arrival of the probe within 1 s. Every probe of
    one cell draws its gaps from one seed, scaled by 1 / rate, so the rate at which the median count passes
    STEPS is known exactly (_known_capacity); the limit sits half a step (75 ms) above STEPS, so client overhead
    cannot cross it. The search must bracket that rate: capacity <= known < capacity + resolution, within JITTER.
    The cell's seed follows its id (the fake's port is in it): the test takes a model name whose known rate lies
    in KNOWN_RPS, well inside the floor (0.5) and the ceiling (~7), above the first bisection (~3.5): every
    probe sends its 11 requests in ~3 s or less."""
    b = fake.behaviour
    b.first_token_s, b.gap_s, b.reasoning, b.answer = FIRST_S, 0.002, 0, 3
    b.ttft_per_recent_s, b.recent_window_s = PER_RECENT_S, WINDOW_S
    knobs: dict[str, Any] = dict(
        load_requests=REQUESTS,
        load_duration_s=10,  # the probe floor: 5 requests in 10 s
        load_warmup_pct=0,  # every request sent is measured
        load_cooldown_pct=0,
        slo_ttft_ms=TTFT_LIMIT_MS,
        slo_tpot_ms=1000.0,  # 500 x the token gap: TTFT binds
        slo_percentile=PERCENTILE,
    )
    model, seed, known = _cell_with_a_known_rate(fake.url, knobs)
    (row,) = _engine_rows(fake.url, ["capacity"], model_id=model, **knobs)
    found, resolution = row["capacity_rps"], row["capacity_resolution_rps"]
    print(f"capacity {found:.4f} resolution {resolution:.4f} known {known:.4f} probes {row['capacity_probes']}")
    assert row["capacity_binding"] == "ttft" and row["request_errors"] == 0 and row["requests_incomplete"] == 0
    assert found <= known * (1 + JITTER) and known < (found + resolution) * (1 + JITTER)
    probes = [
        (float(rate), float(ms.split("/")[0])) for rate, ms in (p.split(":") for p in row["capacity_probes"].split(";"))
    ]
    ceiling_rps, ceiling_ttft = probes[0]
    assert 0 < resolution <= RESOLUTION_FRACTION * ceiling_rps * 1.001  # rates in the text have 4 digits
    # the law was in force: the probe at the ceiling took the law's TTFT at its rate (to within a step), above
    # the limit, and the capacity's own probe was within it
    law_ms = 1000.0 * (FIRST_S + PER_RECENT_S * _law_count(seed, ceiling_rps, float(knobs["load_duration_s"])))
    assert TTFT_LIMIT_MS < law_ms and abs(ceiling_ttft - law_ms) < 1000.0 * PER_RECENT_S
    assert row[f"ttft_ms_p{PERCENTILE}"] <= TTFT_LIMIT_MS
    # the search's bracket is two measured probes: one at the capacity that met, one a resolution above that broke
    assert any(rate == pytest.approx(found, rel=1e-3) and ttft <= TTFT_LIMIT_MS for rate, ttft in probes)
    assert any(rate == pytest.approx(found + resolution, rel=1e-3) and ttft > TTFT_LIMIT_MS for rate, ttft in probes)
    # one load point per probe, and the throughput point that set the ceiling
    assert sum(body.get("seed") == 0 for body in b.bodies) == len(probes) + 1


# --- request lengths


def test_lengths_from_distributions_are_bounded_and_repeat_per_seed() -> None:
    uniform = draw_lengths("uniform:10:20", 64, 2000, seed=3)
    assert min(uniform) == 10 and max(uniform) == 20 and uniform == draw_lengths("uniform:10:20", 64, 2000, seed=3)
    assert draw_lengths("uniform:10:20", 15, 50, seed=3) == [min(v, 15) for v in uniform[:50]]  # cut at the budget
    normal = np.array(draw_lengths("normal:100:10", 1000, 4000, seed=1))
    assert abs(normal.mean() - 100) < 1.0 and abs(normal.std() - 10) < 1.0  # sd of the mean: 0.16
    assert set(draw_lengths("empirical:5,50,500", 1000, 300, seed=2)) == {5, 50, 500}
    assert draw_lengths("", 32, 3, seed=0) == [32, 32, 32]


def test_the_deepseek_preset_has_mlperfs_mean_and_cap_scaled_by_the_budget() -> None:
    full = np.array(draw_lengths("mlperf-deepseek-r1", DEEPSEEK_R1_MAX, 20000, seed=5))
    # the cut at 32K takes ~0.5 % of the lognormal's mass: the mean stays within 3 % of 4,043 (sd of the mean ~1 %)
    assert abs(full.mean() - DEEPSEEK_R1_MEAN) / DEEPSEEK_R1_MEAN < 0.03 and full.max() <= DEEPSEEK_R1_MAX
    half = np.array(draw_lengths("mlperf-deepseek-r1", DEEPSEEK_R1_MAX // 2, 20000, seed=5))
    assert abs(half.mean() - full.mean() / 2) < 2.0  # scaled by budget / 32K


def test_length_specs_name_their_mistakes() -> None:
    knob = KNOBS["output_lengths"]
    assert knob.check("uniform:64:512") == "" and knob.check("mlperf-deepseek-r1") == ""
    assert "LO <= HI" in knob.check("uniform:9:3")
    assert "expected one of" in knob.check("gamma:2")
    assert "numbers" in knob.check("empirical:a,b")


def test_the_reasoning_preset_leaves_the_model_free_to_stop(fake: FakeServer) -> None:
    fake.behaviour.mode, fake.behaviour.finish = "think", "length"
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.01, 0.005
    (row,) = _engine_rows(
        fake.url, ["rate:20"], load_requests=10, output_lengths="reasoning", endpoint="completions", ignore_eos=True
    )
    # not held (ignore_eos is off for it), so answers cut at the budget are counted as truncated
    assert row["requests_measured"] == 8 and row["requests_truncated"] == 8
    assert row["reasoning_tokens_mean"] == 5 and row["answer_tokens_mean"] == 4
    assert row["answer_ttft_ms_p50"] > row["ttft_ms_p50"]  # the thinking phase comes first
    (held,) = _engine_rows(fake.url, ["rate:20"], load_requests=10, endpoint="completions")
    assert held["requests_truncated"] is None  # held lengths: truncation is not a finding

"""Served load (the `load` knob): schedules, the sweep's points, the client's lag accounting, bounded loops and
clean cancellation, and load points against the fake OpenAI server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.errors import BenchError
from bench.runners.registry import quantization_catalog
from bench.runners.server.arrivals import profile_of, send_offsets, sweep_rates
from bench.runners.server.capacity_search import MAX_PROBES, Limits, Probe, search_capacity
from bench.runners.server.lengths import DEEPSEEK_R1_MAX, DEEPSEEK_R1_MEAN, draw_lengths
from bench.runners.server.loadpoint import LAG_LIMIT_MS, PointBounds, client_check, split
from bench.runners.server.openloop import CANCELLED, run_closed, run_open
from bench.runners.server.runner import ServerEngine
from bench.runners.server.stream import Piece, RequestRecord
from bench.suite import expand, load_suite
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


def _engine_rows(url: str, loads: list[str], **knobs: Any) -> list[dict[str, Any]]:
    settings: dict[str, Any] = {"server_url": url, "prompt_tokens": 8, "load_duration_s": 10, **knobs}
    cells = [cpu_cell("server", "source", load=load, **settings) for load in loads]
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

"""The server backend against a fake OpenAI-compatible server on loopback: what it reads from a stream
(TTFT, time to first answer token, reasoning and answer counts, truncation) and the faults it must survive."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.results import read_results
from bench.runners.base import measure_fields
from bench.runners.server.runner import ServerEngine
from bench.runners.server.stream import RequestRecord, StreamReader
from tests.conftest import cpu_cell, quick_suite_yaml
from tests.runners.fake_openai_server import FakeServer


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _measure(url: str, **knobs: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"server_url": url, "repetitions": 2, "warmup": 1, "prompt_tokens": 16, **knobs}
    cell = cpu_cell("server", "source", **settings)
    engine = ServerEngine(Path("unused.gguf"), cell)
    try:
        info = engine.load()
        assert info.extra["server_models"] == "fake-model" and info.extra["server_version"] == "vLLM fake 1.0"
        assert info.extra["served_by"] == "vLLM"  # the name its version endpoint (/version) stands for
        engine.start_context(cell)
        return engine.measure(cell)
    finally:
        engine.close()


@pytest.mark.timing  # elapsed times held under the fake's sleeps plus 40-150 ms
def test_reasoning_content_then_content(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.05, 0.02
    row = _measure(fake.url, ignore_eos=False, parallel=2)
    assert row["requests_measured"] == 4 and row["request_errors"] == 0
    assert row["reasoning_tokens_mean"] == 3 and row["answer_tokens_mean"] == 4
    # TTFT is the first reasoning token (50 ms); the first answer token comes 3 gaps (60 ms) later
    assert 50 <= row["ttft_ms_p50"] < 50 + 150  # sleeps are lower bounds; a shared machine adds to them
    assert 60 <= row["answer_ttft_ms_p50"] - row["ttft_ms_p50"] < 60 + 150
    assert 20 <= row["itl_ms_p50"] < 60 and 20 <= row["tpot_ms_p50"] < 60
    assert row["requests_truncated"] == 4  # every answer cut at max_tokens while free to stop: counted
    assert row["decode_tok_s_mean"] > row["decode_tok_s_per_seq_mean"] > 0 and row["request_throughput_rps"] > 0
    assert len(row["decode_tok_s_samples"].split(";")) == 2  # one aggregate figure per measured round
    # each measured request is one user's turn: 2 users x 2 rounds samples for the SLO's percentile
    ttft, tpot = (list(map(float, row[f"{n}_ms_per_seq_samples"].split(";"))) for n in ("ttft", "tpot"))
    assert len(ttft) == len(tpot) == 4 and min(ttft) >= 50 and min(tpot) >= 20  # sleeps: lower bounds


@pytest.mark.timing  # an elapsed time held under the fake's sleeps plus 150 ms
def test_think_tags_in_raw_text(fake: FakeServer) -> None:
    fake.behaviour.mode, fake.behaviour.finish = "think", "stop"
    row = _measure(fake.url, endpoint="completions", ignore_eos=False)
    # <think>, r0, r1, </think> and the blank line after it are reasoning; the 4 answer pieces follow
    assert row["reasoning_tokens_mean"] == 5 and row["answer_tokens_mean"] == 4
    assert 50 <= row["answer_ttft_ms_p50"] - row["ttft_ms_p50"] < 50 + 150
    assert row["requests_truncated"] == 0


def test_held_lengths_leave_truncation_blank(fake: FakeServer) -> None:
    row = _measure(fake.url)
    assert row["requests_truncated"] is None  # ignore_eos held every answer at max_tokens: not a truncation
    assert "output length not held" not in row["warnings"]  # 7 tokens >= gen_tokens 4


@pytest.mark.parametrize("status", [429, 503])
def test_http_errors_are_counted_per_request(fake: FakeServer, status: int) -> None:
    fake.behaviour.fail_every, fake.behaviour.fail_status = 3, status
    row = _measure(fake.url, repetitions=5, warmup=1)
    assert row["requests_measured"] == 5 and row["request_errors"] == 2  # requests 3 and 6 of 6
    assert f"HTTP {status}" in row["warnings"]


def test_every_request_failing_fails_the_cell(fake: FakeServer) -> None:
    fake.behaviour.fail_every, fake.behaviour.fail_status = 1, 500
    with pytest.raises(BenchError, match="every request failed; first: HTTP 500"):
        _measure(fake.url)


@pytest.mark.timing  # the first token must arrive within the 1 s request timeout
def test_hung_stream_times_out_per_request(fake: FakeServer) -> None:
    fake.behaviour.mode = "hang"
    with pytest.raises(BenchError, match=r"timed out after 1 s \(request_timeout_s\) with 1 tokens"):
        _measure(fake.url, request_timeout_s=1, repetitions=1, warmup=0)


def test_malformed_sse_names_the_line_cut_short(fake: FakeServer) -> None:
    fake.behaviour.mode = "malformed"
    with pytest.raises(
        BenchError, match=r"malformed SSE line 3: 'data: \{\"choices\": \[ this is not json.{20,60}…' \(not JSON\)"
    ):
        _measure(fake.url, repetitions=1, warmup=0)


def test_refused_connection_at_start_is_a_clear_error() -> None:
    with pytest.raises(
        BenchError, match=r"cannot connect to the server at http://127.0.0.1:9/v1/models.*is it running"
    ):
        _measure("http://127.0.0.1:9/v1")


def test_usage_counts_replace_counted_pieces() -> None:
    record = RequestRecord(0, 0, False, 16, sent_s=0.0)
    reader = StreamReader(record)
    for at, line in enumerate(
        [
            'data: {"choices": [{"delta": {"reasoning_content": "hm"}}]}',
            'data: {"choices": [{"delta": {"content": "yes"}, "finish_reason": "stop"}]}',
            'data: {"choices": [], "usage": {"completion_tokens": 10, "completion_tokens_details": {"reasoning_tokens": 6}}}',
            "data: [DONE]",
        ],
        start=1,
    ):
        reader.feed(line, float(at))
    assert (record.output_tokens, record.reasoning_tokens, record.answer_tokens) == (10, 6, 4)
    assert (record.ttft_s, record.answer_ttft_s, record.finish_reason) == (1.0, 2.0, "stop")


def test_api_key_is_sent_and_never_written(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-4c1d-never-printed"
    monkeypatch.setenv("BENCH_TEST_KEY", secret)
    fake.behaviour.fail_every, fake.behaviour.fail_status = 2, 401
    row = _measure(fake.url, server_api_key_env="BENCH_TEST_KEY")
    assert any(h.get("Authorization") == f"Bearer {secret}" for h in fake.behaviour.seen_headers)
    assert "HTTP 401" in row["warnings"] and "<api key>" in row["warnings"]  # the fake echoed it: scrubbed
    assert secret not in repr(row)


def test_missing_api_key_variable_is_named() -> None:
    with pytest.raises(BenchError, match="BENCH_NO_SUCH_KEY is not set"):
        _measure("http://127.0.0.1:9/v1", server_api_key_env="BENCH_NO_SUCH_KEY")


def test_bench_run_against_a_url_never_writes_the_api_key(
    fake: FakeServer, write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """`bench run` of a suite naming a server (its `server:` block): rows, report, log and terminal output are
    grepped for the key."""
    secret = "sk-test-9f7e-never-written"
    monkeypatch.setenv("BENCH_TEST_KEY", secret)
    fake.behaviour.fail_every, fake.behaviour.fail_status = 2, 401
    suite = write_suite(
        quick_suite_yaml(
            backends="backends: [server]",
            server=f"server: {{url: '{fake.url}', api_key_env: BENCH_TEST_KEY}}",
            knobs="knobs: {endpoint: [completions]}",
            workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 3, warmup: 0}",
        )
    )
    out, report = tmp_path / "out.csv", tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(suite), "-o", str(out), "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = read_results([out])
    assert rows["status"].tolist() == ["ok"] and rows["request_errors"].iloc[0] >= 1
    assert rows["server_url"].iloc[0] == fake.url and "HTTP 401" in rows["warnings"].iloc[0]
    assert rows["served_by"].iloc[0] == "vLLM" and rows["server_api_key_env"].iloc[0] == "BENCH_TEST_KEY"
    assert any(h.get("Authorization") == f"Bearer {secret}" for h in fake.behaviour.seen_headers)
    written = [done.stdout, done.stderr, *(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())]
    assert not [text for text in written if secret in text]


def test_sustained_mode_keeps_the_users_sending(fake: FakeServer, tmp_path: Path) -> None:
    """workload.sustain_s on a server cell: its users keep sending rounds of requests after the measured ones;
    each window's speed is output tokens over the rounds' time, and every prompt is new (no prompt-cache hits)."""
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.02, 0.01
    cell = cpu_cell(
        "server", "source", server_url=fake.url, repetitions=1, warmup=0, prompt_tokens=16, parallel=2
    ).with_values(sustain_s=1.0, sustain_window_s=0.25)
    engine = ServerEngine(Path("unused.gguf"), cell)
    try:
        engine.load()
        engine.start_context(cell)
        row = measure_fields(engine, cell)
    finally:
        engine.close()
    speeds = [float(v) for v in row["sustain_tok_s_samples"].split(";")]
    # 2 users x 7 tokens per round, a round about 0.02 + 6 x 0.01 s: at most 2 x 7 / 0.08 = 175 tok/s
    assert len(speeds) == 4 and all(0 < v <= 175 for v in speeds), row["sustain_tok_s_samples"]
    assert row["sustain_burst_tok_s"] == pytest.approx(speeds[0], rel=1e-6) and row["sustain_ratio"] > 0
    assert len(fake.behaviour.prompts) == len(set(fake.behaviour.prompts)) > 2 + 4  # measured + sustained, all new

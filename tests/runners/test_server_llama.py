"""The server backend with the real llama-server (scripts/build_llama_tools.sh) on SmolLM2: client figures vs the
server's own timings, a server killed mid-run, Ctrl-C, and `bench run` with the engine and the server side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from bench.errors import BenchError
from bench.results import read_results
from bench.runners.server.runner import ServerEngine
from bench.runners.server.software import llama_server_path
from tests.conftest import bench_cmd, cpu_cell, quick_suite_yaml

SUITE = Path(__file__).parents[2] / "suites" / "engine_vs_server.yaml"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(llama_server_path() is None, reason="llama-server not built (scripts/build_llama_tools.sh)"),
]


def _servers_of(model: Path, root: int) -> list[psutil.Process]:
    """The llama-servers of `model` that process `root` started (directly or through its workers): other
    sessions on a shared machine may serve the same file."""
    try:
        descendants = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for process in descendants:
        try:
            if process.name() == "llama-server" and str(model) in process.cmdline():
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


# The client's time per token against the server's, within 2 %: a client descheduled when the first token
# arrives reads a shorter span.
@pytest.mark.timing
@pytest.mark.parametrize("parallel", [1, 4])
def test_client_figures_are_the_servers_plus_http(smollm2_path: Path, parallel: int) -> None:
    cell = cpu_cell("server", "Q4_1", threads=2, parallel=parallel, prompt_tokens=64, gen_tokens=16, repetitions=2)
    engine = ServerEngine(smollm2_path, cell)
    try:
        info = engine.load()
        assert info.extra["server_version"].startswith("llama-server") and info.extra["served_by"] == "llama-server"
        assert engine.endpoint.base_url.startswith("http://127.0.0.1:")
        assert engine.start_context(cell)["n_ctx"] == parallel * 256
        row = engine.measure(cell)
    finally:
        engine.close()
    assert row["request_errors"] == 0 and row["requests_measured"] == 2 * parallel, row["warnings"]
    assert row["answer_tokens_mean"] == 16 and row["reasoning_tokens_mean"] == 0  # held to gen_tokens
    # The client's clock contains the server's: TTFT >= prompt_ms, time per token ~ predicted_per_token_ms
    assert row["http_overhead_ttft_ms"] >= 0
    assert row["http_overhead_tpot_ms"] >= -0.02 * row["server_predicted_per_token_ms_p50"]


def test_a_shared_prefix_shows_as_cached_prompt_tokens(smollm2_path: Path) -> None:
    """llama-server reports the prompt tokens it reused (`timings.cache_n`): the chat template's system prompt is
    shared by every request anyway; a 32-token shared prefix adds its 32 tokens to that."""
    cached = {}
    for prefix in (0, 32):
        cell = cpu_cell(
            "server", "Q4_1", threads=2, prompt_tokens=96, gen_tokens=4, repetitions=3, warmup=1,
            shared_prefix_tokens=prefix,
        )  # fmt: skip
        engine = ServerEngine(smollm2_path, cell)
        try:
            engine.load()
            engine.start_context(cell)
            row = engine.measure(cell)
        finally:
            engine.close()
        assert "prompt of 96 tokens has" not in row["warnings"]  # the prefix and the template fit: exact lengths
        cached[prefix] = row["cached_prompt_tokens_mean"]
    assert cached[0] is not None and cached[0] < 96 / 2  # distinct prompts: only the template's tokens reused
    assert 30 <= cached[32] - cached[0] <= 34


def test_killed_server_fails_the_cell_and_the_next_gets_a_fresh_one(smollm2_path: Path) -> None:
    cell = cpu_cell("server", "Q4_1", threads=2, parallel=2, prompt_tokens=32, gen_tokens=400, repetitions=1)
    engine = ServerEngine(smollm2_path, cell)
    try:
        engine.load()
        engine.start_context(cell)
        first = engine.server
        assert first is not None
        threading.Timer(1.5, lambda: os.killpg(first.process.pid, signal.SIGKILL)).start()
        with pytest.raises(
            BenchError,
            match=r"llama-server died during the cell \(\d+ requests failed\) "
            r"\(exited with code -9\); its last stderr lines:\n.*\S",
        ):
            engine.measure(cell)
        engine.start_context(cell)
        assert engine.server is not first and engine.server is not None and engine.server.exited() is None
        short = cell.model_copy(update={"gen_tokens": 8})
        assert engine.measure(short)["request_errors"] == 0
    finally:
        engine.close()
    assert not _servers_of(smollm2_path, os.getpid())


def _run(suite: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        bench_cmd("run", str(suite), "-o", str(out), "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_leaves_no_server_process(smollm2_path: Path, write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    suite = write_suite(
        quick_suite_yaml(
            backends="backends: [server]",
            knobs="knobs: {threads: [2]}",
            workload="workload: {prompt_tokens: [32], gen_tokens: 2000, depths: [0], repetitions: 3, warmup: 0}",
        )
    )
    bench = _run(suite, tmp_path / "out.csv")
    deadline = time.monotonic() + 120
    while not _servers_of(smollm2_path, bench.pid) and time.monotonic() < deadline and bench.poll() is None:
        time.sleep(0.2)
    servers = _servers_of(smollm2_path, bench.pid)
    assert servers, bench.communicate()
    time.sleep(1.0)  # requests in flight
    bench.send_signal(signal.SIGINT)
    assert bench.wait(60) == 130
    gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive and len(gone) == len(servers)  # bench's own servers, each ended


def test_bench_run_measures_engine_and_server_side_by_side(tmp_path: Path) -> None:
    """Issue 24's acceptance run: suites/engine_vs_server.yaml (the README's example) measures both backends,
    and one report shows them side by side."""
    out, report = tmp_path / "out.csv", tmp_path / "report.md"
    done = subprocess.run(
        bench_cmd("run", str(SUITE), "-o", str(out), "--quiet", "--report", str(report)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    rows = read_results([out])
    assert sorted(zip(rows["backend"], rows["parallel"], strict=True)) == [
        ("llamacpp", 1), ("llamacpp", 4), ("server", 1), ("server", 4),
    ]  # fmt: skip
    assert (rows["status"] == "ok").all(), rows[["backend", "reason"]]
    server = rows[rows["backend"] == "server"]
    assert (server["decode_tok_s_mean"] > 0).all() and (server["http_overhead_ttft_ms"] >= 0).all()
    assert server["backend_version"].str.len().gt(0).all() and (server["served_by"] == "llama-server").all()
    per_device = report.read_text().split("## Per device")[1].split("\n## ")[0]
    table = [line for line in per_device.splitlines() if line.startswith("|") and "---" not in line]
    assert "served by" in table[0]
    served = [next((w for w in ("engine", "llama-server") if f"| {w} |" in line), "") for line in table[1:5]]
    assert served == ["engine", "llama-server"] * 2  # parallel 1 then 4, engine beside server

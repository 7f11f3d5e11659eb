"""Served load on the real llama-server (scripts/build_llama_tools.sh) with SmolLM2: `bench run` of a sweep gives
one row per load point and a report with the Served capacity section and its curves."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.results import read_results
from bench.runners.server.software import llama_server_path
from tests.conftest import bench_cmd, quick_suite_yaml

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(llama_server_path() is None, reason="llama-server not built (scripts/build_llama_tools.sh)"),
]


def test_bench_run_of_a_sweep_gives_its_points_and_the_served_section(
    smollm2_path: Path,
    write_suite,  # noqa: ANN001
    tmp_path: Path,
) -> None:
    suite = write_suite(
        quick_suite_yaml(
            backends="backends: [server]",
            knobs="knobs: {threads: [2], parallel: [2], load: {sweep: 5}, load_requests: 12, load_duration_s: 20}",
            workload="workload: {prompt_tokens: [32], gen_tokens: 8, depths: [0], repetitions: 1, warmup: 0}",
        )
    )
    out, report = tmp_path / "out.csv", tmp_path / "report.md"
    done = subprocess.run(
        bench_cmd("run", str(suite), "-o", str(out), "--quiet", "--report", str(report)),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    rows = read_results([out]).sort_values("load")
    assert rows["load"].tolist() == [f"sweep:5/{p}" for p in range(1, 6)]
    assert (rows["status"] == "ok").all(), rows[["load", "reason"]]
    assert (rows["request_errors"] == 0).all()  # (on a starved machine the burst point may leave some incomplete)
    synchronous, throughput = rows["request_throughput_rps"].iloc[0], rows["request_throughput_rps"].iloc[1]
    rates = rows["load_rate_rps"].iloc[2:].tolist()
    # GuideLLM's spacing: linspace(synchronous, throughput, 4)[1:]
    step = (throughput - synchronous) / 3
    assert rates == pytest.approx([synchronous + step, synchronous + 2 * step, throughput], rel=1e-6)
    # the first and last 10 % sent (rounded up) left out, except at the burst (all sent at once: none first or
    # last); a point sends at most load_requests, within 20 s
    trimmed = rows.drop(index=rows.index[1])
    assert (trimmed["requests_warmup"] == -(-trimmed["requests_sent"] // 10)).all()
    assert rows["requests_warmup"].iloc[1] == 0 and rows["requests_measured"].iloc[1] == rows["requests_sent"].iloc[1]
    assert (rows["requests_cooldown"] == rows["requests_warmup"]).all() and (rows["requests_sent"] <= 12).all()
    text = report.read_text()
    assert "## Served capacity" in text and "served-capacity.png" in text
    assert (tmp_path / "report-plots" / "served-capacity.png").is_file()

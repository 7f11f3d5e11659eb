"""End to end through the command line: run a suite on the real model, report it, and bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from bench.results import read_results
from tests.conftest import quick_suite_yaml, two_by_two_suite_yaml


def bench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_run_then_report_round_trips(write_suite, tmp_path: Path) -> None:
    suite = write_suite(two_by_two_suite_yaml("e2e"))
    csv_path = tmp_path / "out.csv"
    result = bench("run", str(suite), "-o", str(csv_path), "--quiet")
    assert result.returncode == 0, result.stderr
    frame = read_results([csv_path])
    assert len(frame) == 4  # 2 models x 2 devices
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == 1 and ok["decode_tok_s_mean"].iloc[0] > 0 and ok["prefill_tok_s_mean"].iloc[0] > 0
    row = ok.iloc[0]
    assert row["arch"] == "llama" and row["file_type"] == "Q4_1" and row["n_layers"] == 30
    assert row["peak_rss_bytes"] > row["model_file_bytes"] * 0.5
    assert row["host"] and row["cpu_brand"] and row["backend_version"] == "0.3.36"
    skipped = frame[frame["status"] == "skipped"].set_index(["model_id", "device_id"])
    assert "model file not found: /nonexistent/model.gguf" in skipped.loc[("missing", "cpu"), "reason"]
    assert "cuda:3" in skipped.loc[("smollm2", "gpu3"), "reason"]

    report_path = tmp_path / "report.md"
    result = bench("report", str(csv_path), "-o", str(report_path))
    assert result.returncode == 0, result.stderr
    report = report_path.read_text()
    assert "smollm2" in report and "model file not found" in report
    decode = f"{row['decode_tok_s_mean']:,.1f}"
    assert decode in report  # the measured figure reaches the report unchanged


def test_bad_suite_prints_one_clear_line_not_a_traceback(write_suite) -> None:
    suite = write_suite(quick_suite_yaml().replace("repetitions: 2", "repetitions: -1"))
    result = bench("run", str(suite))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "workload.repetitions" in result.stderr and "suite.yaml:" in result.stderr


def test_plan_lists_cells_without_running(write_suite) -> None:
    suite = write_suite(quick_suite_yaml(knobs="knobs: {threads: [1, 2]}"))
    result = bench("plan", str(suite))
    assert result.returncode == 0, result.stderr
    assert "2 to run" in result.stdout


def test_hw_prints_fingerprint() -> None:
    result = bench("hw")
    assert result.returncode == 0, result.stderr
    assert "cores" in result.stdout.lower()
    # Each sensor bench reads, readable or why not (these VMs have none of RAPL, cpufreq, hwmon, NVML).
    assert "CPU energy (RAPL)" in result.stdout and "CPU frequency (cpufreq)" in result.stdout


def test_report_of_a_broken_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"suite": ["s"], "model_id": ["m"], "status": ["ok"]}).to_csv(path, index=False)
    path.write_text(path.read_text() + "s,m\n")
    result = bench("report", str(path), "-o", str(tmp_path / "r.md"))
    assert result.returncode == 2 and "bad.csv:3" in result.stderr and "Traceback" not in result.stderr

"""Fault injection through the real command line: nothing measured is ever lost.

Each case runs `bench run` on SmolLM2 with a deliberate failure (BENCH_FAULT makes a worker
kill itself, hang or exhaust memory at a chosen cell) and checks the rows and the exit code.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bench.results import read_results
from tests.conftest import bench_cmd, quick_suite_yaml
from tests.faults.inject import environment

WORKER_SIGNALS = {1: "SIGSEGV", 2: "SIGILL", 3: "SIGABRT", 4: "SIGKILL"}


def run_bench(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bench_cmd(*args), capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}, **kwargs
    )


def test_each_deadly_signal_fails_only_its_cell(write_suite, tmp_path: Path) -> None:
    suite = write_suite(quick_suite_yaml(knobs="knobs: {threads: [1, 2, 3, 4, 5]}"))
    fault = ";".join(f"{sig}@threads={threads}" for threads, sig in WORKER_SIGNALS.items())
    out = tmp_path / "r.csv"
    result = run_bench("run", str(suite), "-o", str(out), "--quiet", env=environment(fault))
    assert result.returncode == 3, result.stderr
    rows = read_results([out]).set_index("threads")
    for threads, sig in WORKER_SIGNALS.items():
        assert rows.loc[threads, "status"] == "failed"
        assert f"worker died by {sig}" in rows.loc[threads, "reason"]
    assert "repack: false" in rows.loc[2, "reason"]  # SIGILL says how to fix it
    assert rows.loc[5, "status"] == "ok" and rows.loc[5, "decode_tok_s_mean"] > 0


# cell_timeout_s 10 times out the hanging cell, and must not time out the others (3 threads on this 2-core
# machine: a loaded machine slows them many times over).
@pytest.mark.timing
def test_memory_limit_and_hang(write_suite, tmp_path: Path) -> None:
    suite = write_suite(
        quick_suite_yaml(
            knobs="knobs: {threads: [1, 2, 3]}",
            limits="limits: {cell_timeout_s: 10, load_timeout_s: 120, memory_limit_gb: 1}",
        )
    )
    out = tmp_path / "r.csv"
    result = run_bench("run", str(suite), "-o", str(out), "--quiet", env=environment("oom@threads=1;hang@threads=2"))
    assert result.returncode == 3, result.stderr
    rows = read_results([out]).set_index("threads")
    assert rows.loc[1, "status"] == "failed" and rows.loc[1, "reason"].startswith("out of memory")
    assert rows.loc[2, "status"] == "timeout"
    assert rows.loc[3, "status"] == "ok"


def _wait_for_rows(path: Path, count: int, deadline_s: float = 120) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= count + 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not get {count} rows in {deadline_s} s")


def test_ctrl_c_keeps_finished_rows_and_exits_130(write_suite, tmp_path: Path) -> None:
    suite = write_suite(quick_suite_yaml(knobs="knobs: {threads: [1, 2]}"))
    out = tmp_path / "r.csv"
    process = subprocess.Popen(
        bench_cmd("run", str(suite), "-o", str(out), "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment("hang@threads=2")},
    )
    _wait_for_rows(out, 1)
    time.sleep(1.0)  # the second cell's worker is now hanging
    workers = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    frame = read_results([out])
    assert list(frame["status"]) == ["ok"] and frame["threads"].tolist() == [1]
    assert workers and not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)


def test_disk_full_while_writing_is_a_clear_error_and_keeps_rows(write_suite, tmp_path: Path) -> None:
    suite = write_suite(quick_suite_yaml(knobs="knobs: {threads: [1, 2, 3]}"))
    out = tmp_path / "r.csv"
    first = run_bench("run", str(suite), "-o", str(out), "--quiet", "--only", "threads=1")
    assert first.returncode == 0, first.stderr
    size_after_one_row = out.stat().st_size

    def limit_file_size() -> None:
        # A file-size limit acts like a full disk: writes past it fail with EFBIG instead of killing us.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = size_after_one_row + 200
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_bench("run", str(suite), "--resume", str(out), "--quiet", preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr
    assert "cannot write results" in result.stderr and "intact" in result.stderr
    assert "Traceback" not in result.stderr
    frame = read_results([out])  # still a valid CSV: no half line
    assert frame["threads"].tolist() == [1]
    assert out.stat().st_size == size_after_one_row


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"not a model at all\n", "is not a GGUF file"),
        ("truncate", "truncated"),
    ],
)
def test_bad_model_files_fail_their_cells_clearly(
    write_suite, tmp_path: Path, smollm2_path: Path, content, expected
) -> None:
    model = tmp_path / "model.gguf"
    if content == "truncate":
        model.write_bytes(smollm2_path.read_bytes()[: smollm2_path.stat().st_size // 2])
    else:
        model.write_bytes(content)
    suite = write_suite(quick_suite_yaml(models=f"models:\n  - {{id: broken, source: '{model}'}}"))
    out = tmp_path / "r.csv"
    result = run_bench("run", str(suite), "-o", str(out), "--quiet")
    assert result.returncode == 3, result.stderr
    row = read_results([out]).iloc[0]
    assert row["status"] == "failed" and expected in row["reason"], row["reason"]


def test_model_of_an_architecture_llamacpp_does_not_know(write_suite, tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    model = tmp_path / "alien.gguf"
    writer = GGUFWriter(str(model), "alienformer")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    suite = write_suite(quick_suite_yaml(models=f"models:\n  - {{id: alien, source: '{model}'}}"))
    out = tmp_path / "r.csv"
    result = run_bench("run", str(suite), "-o", str(out), "--quiet")
    assert result.returncode == 3, result.stderr
    row = read_results([out]).iloc[0]
    assert row["status"] == "failed" and "could not load" in row["reason"], row["reason"]
    assert "alienformer" in row["reason"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killing_bench_leaves_no_worker_behind(write_suite, tmp_path: Path, sig: signal.Signals) -> None:
    suite = write_suite(quick_suite_yaml(knobs="knobs: {threads: [1, 2]}"))
    out = tmp_path / "r.csv"
    process = subprocess.Popen(
        bench_cmd("run", str(suite), "-o", str(out), "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **environment("hang@threads=2")},
    )
    _wait_for_rows(out, 1)
    time.sleep(1.0)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers
    process.send_signal(sig)
    process.communicate(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"workers outlived bench after {sig.name}: {alive}"
    assert read_results([out])["threads"].tolist() == [1]  # the finished row is intact

"""Worker isolation units: load crashes, timeouts without orphans, exit descriptions.

Signals and memory limits per cell are exercised end to end in tests/faults/.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from bench.execute.local import CellOutcome, WorkGroup, run_group
from bench.execute.process import describe_exit
from bench.suite import Cell
from tests.faults.inject import environment


def _cell(threads: int, gen: int = 8) -> Cell:
    return Cell(
        suite="t",
        model_id="smollm2",
        quantization="Q4_1",
        backend="llamacpp",
        device_id="cpu",
        device_kind="cpu",
        device_index=0,
        threads=threads,
        n_gpu_layers=0,
        prompt_tokens=32,
        gen_tokens=gen,
        depth=0,
        repetitions=1,
        warmup=0,
    )


def _run(
    model: Path, cells: list[Cell], fault: str, monkeypatch: pytest.MonkeyPatch, **limits: float
) -> list[CellOutcome]:
    for name, value in environment(fault).items():
        monkeypatch.setenv(name, value)
    outcomes: list[CellOutcome] = []
    run_group(WorkGroup("llamacpp", model, cells, **limits), outcomes.append)
    return outcomes


def test_crash_while_loading_fails_every_cell_of_the_group(smollm2_path: Path, monkeypatch) -> None:
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "SIGSEGV@load", monkeypatch)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("while loading the model" in o.reason for o in outcomes)


def test_hanging_cell_times_out_without_leaving_processes(smollm2_path: Path, monkeypatch) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "hang@threads=1", monkeypatch, cell_timeout_s=30)
    assert outcomes[0].status == "timeout" and "30 s" in outcomes[0].reason
    assert outcomes[1].status == "ok"
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before  # no zombie or orphan worker left behind


def test_describe_exit_names_the_signal_and_the_interesting_line() -> None:
    text = describe_exit(-int(signal.SIGABRT), "load ok\nGGML_ASSERT(n <= ctx) failed\nbye\n")
    assert "SIGABRT" in text and "GGML_ASSERT(n <= ctx) failed" in text
    assert describe_exit(3, "") == "worker exited with code 3"


def test_memory_limit_is_on_resident_memory_not_address_space(smollm2_path: Path, monkeypatch) -> None:
    """A cell that maps far more than the limit but keeps its resident memory under it is measured; one whose
    resident memory grows past the limit fails as out of memory, naming the figures."""
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "oom@threads=2", monkeypatch, memory_limit_bytes=2**30)
    assert outcomes[0].status == "ok"  # mmap'd model + 1 GiB limit: address space is far larger than 1 GiB
    assert outcomes[1].status == "failed"
    assert outcomes[1].reason.startswith("out of memory: the worker's resident memory reached")


def test_worker_runs_no_hook_unless_named(monkeypatch) -> None:
    """Production workers run without a hook: faults exist only where a test names its module."""
    from bench.execute.worker import HOOK_ENV, _load_hook

    monkeypatch.setenv("BENCH_FAULT", "SIGKILL@threads=1")
    monkeypatch.delenv(HOOK_ENV, raising=False)
    _load_hook()("cell", _cell(1))  # were a hook active, this test process would die here

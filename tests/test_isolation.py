"""Worker isolation units: load crashes, timeouts without orphans, exit descriptions.

Signals and memory limits per cell are exercised end to end in tests/faults/.
"""
from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest

from bench.isolation import CellOutcome, WorkGroup, describe_exit, run_group
from bench.suite import Cell


def _cell(threads: int, gen: int = 8) -> Cell:
    return Cell(suite="t", model_id="smollm2", quantization="Q4_1", backend="llamacpp", device_id="cpu",
                device_kind="cpu", device_index=0, threads=threads, n_gpu_layers=0, n_batch=2048, n_ubatch=512,
                flash_attn="auto", kv_cache_type="f16", mmap=True, repack=True, torch_compile=None,
                static_cache=None, prompt_tokens=32, gen_tokens=gen, depth=0, repetitions=1, warmup=0)


def _run(model: Path, cells: list[Cell], fault: str, monkeypatch: pytest.MonkeyPatch, **limits: float) -> list[CellOutcome]:
    monkeypatch.setenv("BENCH_FAULT", fault)
    outcomes: list[CellOutcome] = []
    run_group(WorkGroup("llamacpp", model, cells, **limits), outcomes.append)
    return outcomes


def test_crash_while_loading_fails_every_cell_of_the_group(smollm2_path: Path, monkeypatch) -> None:
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "SIGSEGV@load", monkeypatch)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("while loading the model" in o.reason for o in outcomes)


def test_hanging_cell_times_out_without_leaving_processes(smollm2_path: Path, monkeypatch) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "hang@threads=1", monkeypatch, cell_timeout_s=10)
    assert outcomes[0].status == "timeout" and "10 s" in outcomes[0].reason
    assert outcomes[1].status == "ok"
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before  # no zombie or orphan worker left behind


def test_describe_exit_names_the_signal_and_the_interesting_line() -> None:
    text = describe_exit(-int(signal.SIGABRT), "load ok\nGGML_ASSERT(n <= ctx) failed\nbye\n", None)
    assert "SIGABRT" in text and "GGML_ASSERT(n <= ctx) failed" in text
    assert describe_exit(3, "", None) == "worker exited with code 3"


def test_fault_hook_is_inert_without_the_variable(monkeypatch) -> None:
    from bench.worker import maybe_inject_fault

    monkeypatch.delenv("BENCH_FAULT", raising=False)
    maybe_inject_fault("cell", _cell(1))  # were it active, this test process would die here

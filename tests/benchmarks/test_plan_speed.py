"""`bench plan` on a generated 10,000-cell suite (prints the time; no timed assertion).

The suite is shaped like a real sweep: one 7B model (a built-in known shape, its file not on this machine)
at 5 quantizations on a GPU and the CPU × 5 prompt sizes × 5 depths × 5 thread counts × 2 KV types × 2 flash
attention settings × 2 micro-batch sizes. The issue's target is < 3 s for the whole command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.runners.registry import quantization_catalog
from bench.suite import expand, parse_suite

pytestmark = pytest.mark.timing

ROOT = Path(__file__).resolve().parents[2]
SUITE = """
name: sweep-10k
models:
  - id: r1-distill-qwen-7b
    source: hf://bartowski/DeepSeek-R1-Distill-Qwen-7B-GGUF/DeepSeek-R1-Distill-Qwen-7B-f16.gguf
    source_quantization: F16
    allow_requantize: true
quantizations: [Q4_K_M, Q8_0, Q4_0, Q5_K_M, Q6_K]
devices:
  - {id: gpu0, kind: cuda, index: 0, n_gpu_layers: all, memory_gb: 24}
  - {id: cpu, kind: cpu}
workload:
  prompt_tokens: [128, 256, 512, 1024, 2048]
  gen_tokens: 128
  depths: [0, 1024, 4096, 16384, 32768]
  repetitions: 3
  warmup: 1
knobs:
  threads: [1, 2, 4, 8, 16]
  kv_cache_type: [f16, q8_0]
  flash_attn: [on, off]
  n_ubatch: [256, 512]
"""


@pytest.fixture(scope="module")
def suite_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "sweep.yaml"
    path.write_text(SUITE)
    assert len(expand(parse_suite(SUITE, path, quantization_catalog()))) == 10_000
    return path


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


def test_plan_on_10k_cells(benchmark, suite_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    wall, cpu = time.perf_counter(), time.process_time()
    status = benchmark.pedantic(main, args=(["plan", str(suite_path)],), rounds=1, iterations=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    out = capsys.readouterr().out
    started = time.perf_counter()
    whole = subprocess.run(
        [sys.executable, "-m", "bench.cli", "plan", str(suite_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    command_s = time.perf_counter() - started
    with capsys.disabled():
        print(
            f"\nbench plan on 10,000 cells: {wall:.2f} s ({cpu:.2f} s CPU) in process; {command_s:.2f} s as a "
            f"command, interpreter start and imports included (target < 3 s; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
        )
    assert status == 0 and whole.returncode == 0, whole.stderr
    assert "sweep-10k: 10000 cells" in out and "Estimated run time: " in out
    assert len(out.splitlines()) < 200  # a summary, not a line per cell

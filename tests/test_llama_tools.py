"""bench agrees with llama.cpp's own tools, built from the same vendored source (scripts/build_llama_tools.sh):
llama-bench for single-sequence prefill and decode, llama-batched-bench for concurrent sequences.

Speed on a shared machine drifts, so each comparison interleaves single measurements (bench, tool, tool,
bench, ...) and takes the median ratio. `make test` builds the tools first and sets
BENCH_REQUIRE_LLAMA_TOOLS=1, so there these tests run instead of skipping.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.llama_reference import batched_bench_once, bench_once, llama_bench_once, tools_dir

ROUNDS = 4
THREADS = 2


def need_tool(name: str) -> Path:
    path = tools_dir() / name
    if not path.is_file():
        message = f"{name} is not built in {tools_dir()}: run scripts/build_llama_tools.sh"
        if os.environ.get("BENCH_REQUIRE_LLAMA_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def interleaved_ratios(
    ours: Callable[[], tuple[float, float]], theirs: Callable[[], tuple[float, float]], rounds: int = ROUNDS
) -> tuple[float, float]:
    """Median ratios ours/theirs of (prefill, decode), alternating which side goes first each round."""
    pp, tg = [], []
    for index in range(rounds):
        if index % 2 == 0:
            a, b = ours(), theirs()
        else:
            b, a = theirs(), ours()
        pp.append(a[0] / b[0])
        tg.append(a[1] / b[1])
    return statistics.median(pp), statistics.median(tg)


def test_single_sequence_agrees_with_llama_bench(smollm2_path: Path) -> None:
    need_tool("llama-bench")
    pp, tg = interleaved_ratios(
        lambda: bench_once(smollm2_path, THREADS, 0, 256, 64),
        lambda: (llama_bench_once(smollm2_path, THREADS, 0, 256, 0), llama_bench_once(smollm2_path, THREADS, 0, 0, 64)),
    )
    print(f"\nbench / llama-bench, median of {ROUNDS} interleaved rounds: pp256 {pp:.3f}, tg64 {tg:.3f}")
    # Measured on this 2-core VM: pp 1.03 both times, tg 1.05 on a quiet machine and 1.18-1.19 under load
    # (bench faster: not explained yet). The bound catches a broken harness, not a few percent.
    assert 0.8 <= pp <= 1.25 and 0.8 <= tg <= 1.25


@pytest.mark.parametrize("parallel", [4, 8])
def test_concurrent_sequences_agree_with_llama_batched_bench(smollm2_path: Path, parallel: int) -> None:
    """S_PP and S_TG of llama-batched-bench. It decodes right after the prompts (positions prompt..prompt+gen),
    so bench's decode figure comes from the cell at depth = prompt, its prefill figure from depth 0.

    Measured here (2-core VM): 4 sequences 1.065 / 1.007, 8 sequences 0.998 / 1.062 (S_PP / S_TG). At one
    sequence batched-bench's single timed run reads 11-19 % slower than bench's steady state (its first
    configuration after the warm-up), so one sequence is checked against llama-bench above instead."""
    need_tool("llama-batched-bench")
    prompt, gen = 128, 32

    def ours() -> tuple[float, float]:
        return (
            bench_once(smollm2_path, THREADS, 0, prompt, gen, parallel)[0],
            bench_once(smollm2_path, THREADS, prompt, prompt, gen, parallel)[1],
        )

    pp, tg = interleaved_ratios(ours, lambda: batched_bench_once(smollm2_path, THREADS, prompt, gen, parallel))
    print(
        f"\nbench / llama-batched-bench at {parallel} sequences, median of {ROUNDS} rounds: S_PP {pp:.3f}, "
        f"S_TG {tg:.3f}"
    )
    assert 0.8 <= pp <= 1.25 and 0.8 <= tg <= 1.25  # see the single-sequence test

"""bench agrees with llama.cpp's own tools on a machine that is not idle (issue 21).

A bounded busy-loop process runs during every comparison: at nice 0 it takes a core's worth of CPU from both
tools, at nice 19 almost nothing. bench must lose what llama-bench (and llama-batched-bench) lose, no more:
a worker scheduled apart from bench's session once lost 50-150x where llama-bench lost 2.5x. The rounds
interleave as in tests/test_llama_tools.py; the rule is the same with a 10 % band, since a busy loop makes
each round noisier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.llama_reference import batched_bench_once, bench_once, llama_bench_once
from tests.test_llama_tools import agreement, interleaved_ratios, need_tool

# Speed ratios, and a busy loop that would slow whatever ran beside it.
pytestmark = pytest.mark.timing

LOADED_TOLERANCE = 0.10
# Past this the harness is broken: a collapse like issue 21's (50-150x) or even 2x. Not the quiet tests'
# 0.8-1.25: under a nice-0 loop with 2 threads, medians of 11 rounds have read 0.797 twice in about ten runs (once
# decode, once prefill), with every round's ratio between 0.64 and 1.21, as three threads trade two cores.
LOADED_SANITY = (0.5, 2.0)
BUSY_LIMIT_S = 900  # the busy process ends by itself after this, whatever happens to the test
PROMPT, GEN = 128, 64
# Where the scatter is (three threads on two cores: nice 0, 2 threads), single decodes of the same cell
# scatter from 0.5x to 2x as the threads and the loop trade cores, so each side is the mean of 3 repetitions
# (4 until CI's 40 minutes grew tight; the rounds, not the repetitions, set the median's interval)
# over 11 rounds: the median's 95 % interval is then [2nd lowest, 2nd highest] round, and one CI run with
# 2 repetitions over 9 rounds read a median of 0.797 where quieter runs read 0.89-0.96 (a 40-pair check of
# decode right after a prefill against decode alone found no effect beyond noise: median 0.96, 95 % CI
# 0.87-1.11). Elsewhere (one thread, or a nice-19 loop) 6 single rounds are as tight.
NOISY = {"repetitions": 3, "rounds": 11}
QUIET = {"repetitions": 1, "rounds": 6}


@contextmanager
def busy_process(nice: int) -> Iterator[None]:
    """One CPU-bound process (a Python busy loop) at `nice`, in this session, for the duration of the block."""
    loop = (
        f"import os, time\nos.nice({nice})\nend = time.monotonic() + {BUSY_LIMIT_S}\nwhile time.monotonic() < end: pass"
    )
    process = subprocess.Popen([sys.executable, "-c", loop])
    try:
        yield
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize(("nice", "threads", "protocol"), [(0, 2, NOISY), (0, 1, QUIET), (19, 2, QUIET)])
def test_single_sequence_under_load_agrees_with_llama_bench(
    smollm2_path: Path, nice: int, threads: int, protocol: dict[str, int]
) -> None:
    need_tool("llama-bench")
    reps = protocol["repetitions"]
    with busy_process(nice):
        pp, tg = interleaved_ratios(
            lambda: bench_once(smollm2_path, threads, 0, PROMPT, GEN, repetitions=reps)[:2],
            lambda: (
                llama_bench_once(smollm2_path, threads, 0, PROMPT, 0, reps),
                llama_bench_once(smollm2_path, threads, PROMPT, 0, GEN, reps),
            ),
            protocol["rounds"],
        )
    print(f"\nbench / llama-bench, busy loop at nice {nice}, {threads} threads, load average {os.getloadavg()[0]:.1f}")
    problems = [
        agreement(f"pp{PROMPT}", pp, LOADED_TOLERANCE, LOADED_SANITY),
        agreement(f"tg{GEN} @ d{PROMPT}", tg, LOADED_TOLERANCE, LOADED_SANITY),
    ]
    assert not any(problems), problems


def test_concurrent_sequences_under_load_agree_with_llama_batched_bench(smollm2_path: Path) -> None:
    """4 sequences, 32 steps; as in tests/test_llama_tools.py, one bench cell at depth 0 gives both figures:
    its decode follows the prompts, where llama-batched-bench decodes (S_TG: all sequences together)."""
    need_tool("llama-batched-bench")
    parallel, gen = 4, 32

    def ours() -> tuple[float, float]:
        speeds = bench_once(smollm2_path, 2, 0, PROMPT, gen, parallel)
        return speeds.prefill, speeds.decode

    with busy_process(0):
        pp, tg = interleaved_ratios(
            ours, lambda: batched_bench_once(smollm2_path, 2, PROMPT, gen, parallel), QUIET["rounds"]
        )
    print(f"\nbench / llama-batched-bench, {parallel} sequences, busy loop at nice 0")
    problems = [
        agreement("S_PP", pp, LOADED_TOLERANCE, LOADED_SANITY),
        agreement("S_TG", tg, LOADED_TOLERANCE, LOADED_SANITY),
    ]
    assert not any(problems), problems

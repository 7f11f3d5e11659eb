"""Synthetic models (issue 14): what synthesizing costs, and synthetic vs real speed (prints figures; the machine
is shared and noisy, so speed is a printed figure, never an assert).

Targets from the issue: DeepSeek-R1-Distill-Qwen-1.5B at Q4_K_M from nothing in under 3 minutes and under
2.5 GB peak RSS on 2 cores; synthetic vs real prefill and decode tok/s within 5% (median of interleaved rounds).

Measured on this 2-core VM. Before synthetic block scales were spread like real ones (three runs, shared
machine): prefill synthetic/real 0.99-1.08, decode 1.11-1.20 (synthetic faster), CPU time per repetition
0.88-0.94. The cause: on x86 ggml converts each quantized block's FP16 scale through a 256 KiB lookup table, and
the narrow scales of random rows touch a fraction of it (llama-bench, 8 interleaved rounds: the real SmolLM2 Q8_0
with the synthetic file's scales decoded 10 % faster, the synthetic file with the real scales 14 % slower).
With the spread (bench.models.synthetic_gguf.BLOCK_SCALE_SPREAD_LOG2), at load average 1: prefill 1.001 (SmolLM2
Q8_0) and 0.998 (Gemma-3 Q4_K_M), decode 0.964 / 1.043, CPU time per repetition 1.022 / 0.979, peak RSS 1.000 /
0.994, file size -0.30 % / -0.23 %; at load average 6: CPU time 1.032 / 1.015, decode 0.941 / 0.928.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.synthetic_pairs import interleaved_speed, measure_rounds, median_ratio, validation_pairs

pytestmark = pytest.mark.timing

SPEED_ROUNDS = 8  # rounds of fresh copies (see tests/synthetic_pairs.py: page placement moves decode speed)
REPETITIONS = 6  # alternating single repetitions of each model per round
SYNTHESIZE = """
import json, resource, sys, time
from bench.runners.llamacpp.synthetic import synthetic_model
started = time.perf_counter()
path = synthetic_model(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - started
peak = lambda who: resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux
print(json.dumps({"seconds": seconds, "bytes": path.stat().st_size, "peak_rss": peak(resource.RUSAGE_SELF),
                  "quantizer_peak_rss": peak(resource.RUSAGE_CHILDREN)}))
"""


def test_synthesize_1_5b_q4_k_m_from_nothing(benchmark, tmp_path: Path) -> None:  # noqa: ANN001 - pytest-benchmark
    """In a fresh process with an empty cache, so nothing is reused and its peak RSS is the synthesis's own."""

    def synthesize() -> dict[str, float]:
        cache = tmp_path / f"cache-{time.monotonic_ns()}"
        result = subprocess.run(
            [sys.executable, "-c", SYNTHESIZE, "DeepSeek-R1-Distill-Qwen-1.5B", "Q4_K_M"],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "BENCH_CACHE_DIR": str(cache)},
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.splitlines()[-1])

    figures = benchmark.pedantic(synthesize, rounds=1, iterations=1)
    gib = 2**30
    print(
        f"\nsynthesize DeepSeek-R1-Distill-Qwen-1.5B Q4_K_M from nothing: {figures['seconds']:.1f} s (target < 180 s), "
        f"peak RSS {figures['peak_rss'] / gib:.2f} GiB (quantizer child {figures['quantizer_peak_rss'] / gib:.2f} "
        f"GiB; target < 2.5 GB), file {figures['bytes']:,} bytes"
    )
    assert figures["bytes"] > 10**9


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BENCH_SYNTHETIC_BENCHMARK") != "1",
    reason="about 6 minutes of interleaved speed rounds that print figures: opt in with BENCH_SYNTHETIC_BENCHMARK=1",
)
def test_synthetic_vs_real_speed_interleaved(benchmark, gemma3_path: Path, tmp_path: Path) -> None:  # noqa: ANN001
    pairs = validation_pairs(gemma3_path)
    # One thread: on a shared 2-core machine a 2-thread llama.cpp stalls whenever either thread is descheduled.
    workload = "{prompt_tokens: [128], gen_tokens: 32, depths: [0], repetitions: 1, warmup: 0}"
    speed = benchmark.pedantic(
        interleaved_speed, args=(pairs, tmp_path, SPEED_ROUNDS, REPETITIONS, workload, 1), rounds=1, iterations=1
    )
    memory = measure_rounds(pairs, tmp_path, 2, workload, 1)
    print(
        f"\nsynthetic / real: median over {SPEED_ROUNDS} rounds of fresh copies, each the median of {REPETITIONS} "
        "alternating repetitions (prompt 128, 32 generated, 1 thread)"
    )
    for pair in pairs:
        size = pair.synthetic.stat().st_size / pair.real.stat().st_size - 1
        print(
            f"{pair.label} {pair.quantization}: file size {100 * size:+.2f}%, peak RSS (bench run, 2 rounds) "
            f"{median_ratio(memory, pair, 'peak_rss_bytes'):.3f}"
        )
        for metric, ratios in speed[pair.label].items():
            rounds = ", ".join(f"{r:.3f}" for r in ratios)
            print(f"  {metric}: median {statistics.median(ratios):.3f} (rounds: {rounds})")
    assert all(len(ratios) == SPEED_ROUNDS for by_metric in speed.values() for ratios in by_metric.values())

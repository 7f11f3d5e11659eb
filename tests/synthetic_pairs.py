"""Issue 14's validation pairs: a synthetic model beside the real file of the same shape and type, measured
by `bench run` itself (each model in its own worker, as a suite runs it), in rounds whose order alternates."""
from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.models.synthetic import synthetic_model
from bench.quantize import derive
from bench.results import read_results
from bench.suite import ModelSpec
from tests.conftest import SMOLLM2_REF


@dataclass(frozen=True)
class Pair:
    label: str  # also the model ids' stem: <label>-synthetic, <label>-real
    quantization: str
    synthetic: Path
    real: Path


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
            models.append(f"  - {{id: {pair.label}-{kind}, source: \"{path}\", source_quantization: {pair.quantization}}}")
    return "\n".join([
        f"name: synthetic-validation-{round_index}", "models:", *models, "quantizations: [source]",
        "devices:", "  - {id: cpu, kind: cpu}", f"workload: {workload}", f"knobs: {{threads: [{threads}]}}",
        "limits: {cell_timeout_s: 600, load_timeout_s: 300}", "",
    ])


def measure_rounds(pairs: list[Pair], folder: Path, rounds: int, workload: str, threads: int) -> pd.DataFrame:
    """One `bench run` per round over every model of every pair; the rows of all rounds, with a `round` column."""
    frames = []
    for index in range(rounds):
        suite = folder / f"round{index}.yaml"
        suite.write_text(_suite(pairs, index, workload, threads), encoding="utf-8")
        output = folder / f"round{index}.csv"
        result = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(suite), "-o", str(output), "--quiet"],
                                capture_output=True, text=True, timeout=3600)
        assert result.returncode == 0, result.stderr
        frame = read_results([output])
        assert (frame["status"] == "ok").all(), frame[["model_id", "status", "reason"]].to_string()
        frames.append(frame.assign(round=index))
    return pd.concat(frames, ignore_index=True)


def round_ratios(rows: pd.DataFrame, pair: Pair, metric: str) -> list[float]:
    """synthetic / real of `metric`, per round."""
    by_model = rows.set_index(["round", "model_id"])[metric]
    return [float(by_model[(r, f"{pair.label}-synthetic")]) / float(by_model[(r, f"{pair.label}-real")])
            for r in sorted(rows["round"].unique())]


def median_ratio(rows: pd.DataFrame, pair: Pair, metric: str) -> float:
    return statistics.median(round_ratios(rows, pair, metric))

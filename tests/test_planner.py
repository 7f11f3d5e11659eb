"""The memory planner: estimates against the real llama.cpp process, fit decisions, largest contexts.

"Measured peak memory" here is what the model adds to a process: its peak resident set (VmHWM, read by
bench.execute.rss.peak_rss_bytes) after loading the model, opening a context of n_ctx cells and running a
64-token prefill and 16 decodes through the real llama.cpp runner, minus its resident set just before the
model was loaded (Python, numpy and the llama.cpp library). The planner's total (weights + KV + compute)
must be within 15 % of it. Contexts of 8192 cells are opened directly rather than filled through the
worker's depth, which would take minutes on 2 cores; the KV cache is allocated and zeroed in full either
way, and its size is compared exactly with what llama.cpp logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.hardware import detect
from bench.runners.base import context_size
from bench.runners.llamacpp.memory import estimate_cell, estimate_memory, max_context, max_context_for_row
from bench.runners.llamacpp.runner import LlamaCppRunner
from bench.runners.llamacpp.shapes import known_model, shape_from_gguf, shape_from_suite, weights_for
from bench.runners.memory import MIB, WORKER_PROCESS_BYTES, Budget
from bench.suite import KNOBS, ModelSpec
from tests.conftest import SMOLLM2_REF, cpu_cell, quick_suite_yaml

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.15

PROBE = r"""
import json, sys
from pathlib import Path

import llama_cpp

from bench.runners.base import measure_cell
from bench.runners.llamacpp.runner import LlamaCppRunner
from bench.suite import Cell
from bench.execute.rss import peak_rss_bytes, reset_peak_rss


def rss():
    with open("/proc/self/status") as handle:
        return next(int(l.split()[1]) * 1024 for l in handle if l.startswith("VmRSS:"))


path, contexts, swa_full = Path(sys.argv[1]), [int(c) for c in sys.argv[2].split(",")], sys.argv[3] == "1"
cell = Cell(suite="probe", model_id="m", quantization="source", backend="llamacpp", device_id="cpu",
            device_kind="cpu", device_index=0, threads=1, n_gpu_layers=0, n_batch=2048, n_ubatch=512,
            flash_attn="auto", kv_cache_type="f16", mmap=True, repack=True, torch_compile=None, static_cache=None,
            swa_full=swa_full, prompt_tokens=64, gen_tokens=16, depth=0, repetitions=1, warmup=0)
runner = LlamaCppRunner(path, cell)
llama_cpp.llama_backend_init()
baseline = rss()
runner.load()
results = []
for n_ctx in contexts:  # ascending: the previous, smaller context never sets the peak
    reset_peak_rss()
    fields = runner.open_context(n_ctx, cell)
    measure_cell(runner, cell)
    results.append({"n_ctx": n_ctx, "added": peak_rss_bytes() - baseline, "kv": fields["kv_cache_bytes"]})
runner.close()
print(json.dumps(results))
"""


def _probe(path: Path, contexts: list[int], swa_full: bool = False) -> list[dict[str, int]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(path), ",".join(map(str, contexts)), "1" if swa_full else "0"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS/VmHWM from /proc")
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_estimates_are_within_15_percent_of_the_real_process(model: str, smollm2_path: Path, gemma3_path: Path) -> None:
    path = smollm2_path if model == "smollm2" else gemma3_path
    shape = shape_from_gguf(path)
    for measured in _probe(path, [512, 4096, 8192]):
        estimate = estimate_memory(shape, n_ctx=measured["n_ctx"], batch_tokens=64, n_ubatch=512)
        assert estimate.kv_ram == pytest.approx(measured["kv"], rel=0.01), measured  # llama.cpp's own log
        error = estimate.total_bytes / measured["added"] - 1
        assert abs(error) <= TOLERANCE, (
            f"{model} n_ctx={measured['n_ctx']}: estimated {estimate.total_bytes / MIB:.1f} MiB, "
            f"measured {measured['added'] / MIB:.1f} MiB ({100 * error:+.1f} %)"
        )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS/VmHWM from /proc")
def test_a_windowed_sliding_window_cache_is_estimated_too(gemma3_path: Path) -> None:
    """Gemma 3 keeps a 512-token window in 15 of its 18 layers; with swa_full off llama.cpp sizes them so."""
    shape = shape_from_gguf(gemma3_path)
    assert shape.sliding_window == 512 and shape.swa_layers.count(True) == 15
    [measured] = _probe(gemma3_path, [8192], swa_full=False)
    estimate = estimate_memory(shape, n_ctx=8192, batch_tokens=64, swa_full=False)
    full = estimate_memory(shape, n_ctx=8192, batch_tokens=64, swa_full=True)
    assert estimate.kv_ram == pytest.approx(measured["kv"], rel=0.01)
    assert estimate.kv_ram < full.kv_ram / 3  # 3 full layers × 8192 cells + 15 × 1024, not 18 × 8192
    assert abs(estimate.total_bytes / measured["added"] - 1) <= TOLERANCE


@pytest.mark.parametrize("swa_full", [False, True])
@pytest.mark.parametrize("parallel", [1, 4])
def test_gemma3_kv_bytes_at_depth_4096_match_llama_cpps_own(gemma3_path: Path, swa_full: bool, parallel: int) -> None:
    """The planner's KV bytes for a Gemma-3-270M cell at depth 4096 against `kv_cache_bytes`, the row field the
    runner reads from llama.cpp's log when it opens the cell's context, within 2 %. Windowed (swa_full false,
    the knob's default) 15 of 18 layers hold each sequence's 512-token window plus a ubatch; full, every layer
    holds the whole context."""
    cell = cpu_cell(
        "llamacpp", "source", model_id="gemma3", depth=4096, prompt_tokens=128, swa_full=swa_full, parallel=parallel
    )
    runner = LlamaCppRunner(gemma3_path, cell)
    runner.load()
    try:
        measured = runner.start_context(cell)["kv_cache_bytes"]
    finally:
        runner.close()
    estimate = estimate_cell(cell, shape_from_gguf(gemma3_path))
    assert estimate.kv_ram == pytest.approx(measured, rel=0.02)
    n_ctx = context_size(cell)
    cells_per_layer = n_ctx if swa_full else min(n_ctx, -(-(512 * parallel + 512) // 256) * 256)
    assert estimate.kv_ram == 3 * n_ctx * 1024 + 15 * cells_per_layer * 1024  # 1 KV head × (256 + 256) × f16


def test_swa_full_defaults_to_llama_bench_not_to_llama_cpps_context_default() -> None:
    import llama_cpp

    assert KNOBS["swa_full"].default is False
    assert bool(llama_cpp.llama_context_default_params().swa_full) is True  # what the runner overrides


def test_offloading_splits_weights_kv_and_compute_between_ram_and_vram(smollm2_path: Path) -> None:
    shape = shape_from_gguf(smollm2_path)
    cpu = estimate_memory(shape, n_ctx=4096, batch_tokens=512)
    gpu = estimate_memory(shape, n_ctx=4096, batch_tokens=512, n_gpu_layers=-1, device_kind="cuda")
    part = estimate_memory(shape, n_ctx=4096, batch_tokens=512, n_gpu_layers=11, device_kind="cuda")
    assert cpu.where == "RAM" and cpu.vram_bytes == 0 and cpu.total_bytes == cpu.ram_bytes
    assert gpu.where == "VRAM" and gpu.kv_ram == 0 and gpu.kv_vram == cpu.kv_ram
    weights = weights_for(shape, None)
    assert gpu.weights_ram == weights.input  # the token embeddings stay in RAM ...
    assert gpu.weights_vram == sum(weights.layers) + weights.output + weights.output_copy  # ... and a tied head copy
    assert part.kv_vram == pytest.approx(cpu.kv_ram * 10 / 30)  # ngl 11 = the output head + the last 10 layers
    assert part.kv_ram + part.kv_vram == cpu.kv_ram
    assert gpu.compute_vram > 96 * MIB  # reserved: the logits of a full 512-token batch (49152 × 512 × 4 bytes)


def test_known_shapes_plan_models_that_are_not_here() -> None:
    """File sizes as the hub lists them for bartowski's DeepSeek-R1-Distill GGUFs (GB = 1e9 bytes)."""
    published = {
        ("DeepSeek-R1-Distill-Qwen-1.5B", "Q8_0"): 1.89e9,
        ("DeepSeek-R1-Distill-Qwen-7B", "Q4_K_M"): 4.68e9,
        ("DeepSeek-R1-Distill-Qwen-14B", "Q4_K_M"): 8.99e9,
    }
    for (name, quant), size in published.items():
        shape = shape_from_suite(ModelSpec(id=name.lower(), files={quant: f"hf://bartowski/{name}-GGUF/x.gguf"}))
        assert shape is not None and shape.name == name
        weights = weights_for(shape, quant)
        assert sum(weights.layers) + weights.input + weights.output == pytest.approx(size, rel=0.05), name
    seven = shape_from_suite(ModelSpec(id="r1-distill-qwen-7b", source="x.gguf"))
    assert seven is not None
    at_32k = estimate_memory(
        seven, n_ctx=32768, batch_tokens=512, n_gpu_layers=-1, device_kind="cuda", quantization="Q4_K_M"
    )
    assert at_32k.kv_vram == 28 * 4 * 128 * 2 * 2 * 32768  # layers × KV heads × head size × K,V × f16 × cells
    assert 5.5 * 2**30 < at_32k.vram_bytes < 8 * 2**30
    assert known_model(ModelSpec(id="smollm2", source=SMOLLM2_REF)) is None
    custom = shape_from_suite(
        ModelSpec(
            id="mine", source="m.gguf", metadata={"params_b": 3, "n_layers": 26, "n_kv_heads": 8, "head_dim": 128}
        )
    )
    assert custom is not None and custom.basis == "suite metadata" and custom.n_params == pytest.approx(3e9, rel=0.01)
    assert shape_from_suite(ModelSpec(id="mine", source="m.gguf", metadata={"params_b": 3})) is None


def test_the_largest_context_is_the_last_that_fits(smollm2_path: Path) -> None:
    shape = shape_from_gguf(smollm2_path)
    budget = Budget(ram_bytes=1 * 2**30, vram_bytes=None, source="test")
    largest = max_context(shape, budget)
    assert largest is not None and largest % 256 == 0 and 4096 < largest < 2**20

    def total(n_ctx: int) -> int:
        return estimate_memory(shape, n_ctx=n_ctx, batch_tokens=512).ram_bytes

    assert total(largest) + WORKER_PROCESS_BYTES <= budget.ram_bytes < total(largest + 256) + WORKER_PROCESS_BYTES
    assert max_context(shape, Budget(ram_bytes=64 * MIB, vram_bytes=None, source="test")) == 0
    assert max_context(shape, Budget(ram_bytes=None, vram_bytes=None, source="unknown")) is None


def test_largest_context_from_a_result_row() -> None:
    row = pd.Series(
        {
            "device_kind": "cpu",
            "n_gpu_layers": 0,
            "ram_total_bytes": 8 * 2**30,
            "n_ctx": 4096,
            "est_total_bytes": 300 * MIB,
            "est_kv_bytes": 90 * MIB,
            "n_ubatch": 512,
            "flash_attn": "auto",
            "gpu_vram_total_bytes": float("nan"),
        }
    )
    tokens, basis = max_context_for_row(row)
    assert basis == "estimated" and tokens is not None and tokens % 256 == 0
    per_token = 90 * MIB / 4096 + 512 * 2
    assert tokens == pytest.approx((8 * 2**30 - 96 * MIB - 210 * MIB) / per_token, abs=300)
    shape_only = {
        "device_kind": "cpu",
        "ram_total_bytes": 8 * 2**30,
        "n_layers": 30,
        "n_kv_heads": 3,
        "head_dim": 64,
        "model_file_bytes": 98_000_000,
        "kv_cache_type": "f16",
    }
    tokens, basis = max_context_for_row(shape_only)
    assert basis == "estimated" and 300_000 < (tokens or 0) < 400_000
    gpu_row = dict(row, device_kind="cuda", n_gpu_layers=-1)
    assert max_context_for_row(gpu_row) == (None, "no VRAM size recorded for this device")
    tokens, _ = max_context_for_row(dict(gpu_row, gpu_vram_total_bytes=24 * 2**30))
    assert tokens is not None and tokens > max_context_for_row(row)[0]


def test_what_fits_per_sequence_follows_swa_full_and_parallel_in_plan_and_report(gemma3_path: Path) -> None:
    """One answer to "what fits per sequence", from bench plan's search and from a result row's estimate alike:
    Gemma 3 with windowed sliding-window layers (swa_full false) fits several times the context of a full cache;
    4 sequences each get about a quarter; and a row carrying the planner's estimate of that setup answers the
    same as the plan, within one 256-token block per sequence."""
    shape = shape_from_gguf(gemma3_path)
    budget = Budget(ram_bytes=2 * 2**30, vram_bytes=None, source="test")
    windowed = max_context(shape, budget, swa_full=False)
    full = max_context(shape, budget, swa_full=True)
    assert windowed is not None and full is not None and windowed > 3 * full
    four = max_context(shape, budget, swa_full=False, parallel=4)
    assert four is not None and 0.2 * windowed < four < 0.3 * windowed
    for swa_full, parallel, planned in ((False, 1, windowed), (True, 1, full), (False, 4, four)):
        cell = cpu_cell("llamacpp", "source", model_id="gemma3", depth=4096, swa_full=swa_full, parallel=parallel)
        estimate = estimate_cell(cell, shape)
        fits_budget = {
            "device_kind": "cpu",
            "n_gpu_layers": 0,
            "ram_total_bytes": budget.ram_bytes,
            "n_ctx": estimate.n_ctx,
            "est_total_bytes": estimate.total_bytes,
            "est_kv_bytes": estimate.kv_bytes,
            "est_kv_bytes_per_token": estimate.kv_bytes_per_token,
            "n_ubatch": cell.n_ubatch,
            "flash_attn": cell.flash_attn,
            "swa_full": swa_full,
            "parallel": parallel,
        }
        tokens, basis = max_context_for_row(fits_budget)
        assert basis == "estimated" and tokens == pytest.approx(planned, abs=256), (swa_full, parallel)
    # A row from before est_kv_bytes_per_token: every cached position counted as growing, so a windowed model's
    # fit is under-stated, never over-stated.
    old_row = {k: v for k, v in fits_budget.items() if k != "est_kv_bytes_per_token"}
    assert (max_context_for_row(old_row)[0] or 0) < four


def test_bench_plan_estimates_the_consumer_suite_without_gpu_or_hub(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hf"), COLUMNS="260", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "bench.cli", "plan", "suites/consumer_gpu.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for size in ("1.5B", "7B", "14B"):  # fallback: synthetic, and the hub files are not in the cache
        assert f"synthetic shape: DeepSeek-R1-Distill-Qwen-{size}" in out
        assert f"hub file not in the cache: synthetic weights of DeepSeek-R1-Distill-Qwen-{size}" in out
    assert "GiB VRAM" in out and "GiB RAM" in out and "Largest context that fits" in out and "fits 32K" in out
    totals = next(line for line in out.splitlines() if " to run, " in line)
    if not detect().gpus:
        assert "device cuda:0" in out and "skipped" in totals
    assert "Estimated run time: " in out


def test_cells_that_will_not_fit_are_skipped_unless_forced(write_suite, tmp_path: Path) -> None:
    from bench.run import RunOptions, run_suite

    workload = "workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}"
    fits = write_suite(quick_suite_yaml("fits", workload=workload), "fits.yaml")
    summary = run_suite(fits, RunOptions(output=tmp_path / "fits.csv", quiet=True))
    row = pd.read_csv(summary.path).iloc[0]
    assert row["status"] == "ok", row["reason"]
    assert row["est_kv_bytes"] == pytest.approx(row["kv_cache_bytes"], rel=0.01)  # llama.cpp logs 2-decimal MiB
    assert 0 < row["est_total_bytes"] < row["peak_rss_bytes"]  # the peak includes the worker's Python
    assert row["est_device_free_bytes"] > 0

    tight = write_suite(
        quick_suite_yaml("tight", workload=workload, limits="limits: {memory_limit_gb: 0.15, cell_timeout_s: 60}"),
        "tight.yaml",
    )
    summary = run_suite(tight, RunOptions(output=tmp_path / "tight.csv", quiet=True))
    row = pd.read_csv(summary.path).iloc[0]
    assert row["status"] == "skipped"
    assert row["reason"].startswith("will not fit") and "GiB RAM" in row["reason"] and "--force" in row["reason"]
    assert row["est_total_bytes"] > 0
    forced = run_suite(tight, RunOptions(output=tmp_path / "forced.csv", quiet=True, force=True))
    assert pd.read_csv(forced.path).iloc[0]["status"] != "skipped"  # it ran (and met its memory limit)

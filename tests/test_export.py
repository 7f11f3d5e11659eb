"""bench export: pytest-benchmark JSON that pytest-benchmark's own `compare` loads, and
github-action-benchmark custom JSON checked against the schema that action reads."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pytest_benchmark.stats import Stats

from bench.cli import main
from bench.compare.export import benchmark_stats
from tests.test_compare import STEADY_DECODE, cells, parallel_cells, row, write

PYTEST_BENCHMARK = Path(sys.executable).with_name("pytest-benchmark")


@pytest.mark.parametrize(
    "data",
    [
        [0.5],
        [0.2, 0.3],
        [3.0, 1.0, 2.0],
        [1, 2, 3, 4],
        [5, 1, 4, 2, 3],
        [1, 1, 2, 3, 5, 8, 13],
        [0.01, 0.011, 0.012, 0.5, 0.013, 0.0105],
    ],
)
def test_stats_match_pytest_benchmark(data: list[float]) -> None:
    reference = Stats()
    for value in data:
        reference.update(value)
    ours = benchmark_stats(data)
    for name, expected in reference.as_dict().items():
        assert ours[name] == pytest.approx(expected) if isinstance(expected, float) else ours[name] == expected, name
    assert ours["data"] == data and ours["iterations"] == 1


def results(tmp_path: Path) -> tuple[Path, Path]:
    fast, other = cells()
    base = write(tmp_path / "base.csv", [row(fast), row(other)])
    cur = write(tmp_path / "cur.csv", [row(fast, decode=tuple(0.8 * v for v in STEADY_DECODE)), row(other)])
    return base, cur


def test_pytest_benchmark_compare_loads_the_export(tmp_path: Path) -> None:
    base, cur = results(tmp_path)
    store = tmp_path / "store"
    assert main(["export", str(base), "--format", "pytest-benchmark", "-o", str(store / "0001_base.json")]) == 0
    assert main(["export", str(cur), "--format", "pytest-benchmark", "-o", str(store / "0002_cur.json")]) == 0
    document = json.loads((store / "0001_base.json").read_text())
    assert set(document) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert document["machine_info"]["node"] == "gpu-a" and len(document["benchmarks"]) == 4
    result = subprocess.run(
        [
            str(PYTEST_BENCHMARK),
            "compare",
            "0001_base.json",
            "0002_cur.json",
            "--columns=mean,ops,rounds",
            "--group-by=group",
            "--name=long",
        ],
        cwd=store,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Failed to load" not in output
    assert "benchmark 'decode': 4 tests" in output and "benchmark 'prefill': 4 tests" in output
    slow_decode = next(
        line
        for line in output.splitlines()
        if "test_decode[" in line and "(0002_cur)" in line and cells()[0].cell_id in line
    )
    # A round is one repetition in seconds per token, so OPS is decode tok/s: 80 now, 0.80 of the fastest.
    assert "79.99" in slow_decode and "(0.80)" in slow_decode


def validate_custom_benchmark_json(document: Any) -> None:
    """github-action-benchmark's custom tools read a JSON array of BenchmarkResult:
    {name: string, value: number, unit: string, range?: string, extra?: string} (src/extract.ts)."""
    assert isinstance(document, list) and document
    names = set()
    for entry in document:
        assert isinstance(entry, dict)
        assert set(entry) <= {"name", "value", "unit", "range", "extra"}, entry
        assert isinstance(entry["name"], str) and entry["name"]
        assert isinstance(entry["unit"], str) and entry["unit"]
        assert isinstance(entry["value"], int | float) and not isinstance(entry["value"], bool)
        assert math.isfinite(entry["value"])
        for optional in ("range", "extra"):
            assert optional not in entry or isinstance(entry[optional], str)
        names.add(entry["name"])
    assert len(names) == len(document), "names key the charts: they must be unique"


def test_github_action_benchmark_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, cur = results(tmp_path)
    bigger, smaller = tmp_path / "bigger.json", tmp_path / "smaller.json"
    assert (
        main(
            [
                "export",
                str(cur),
                "--format",
                "github-action-benchmark",
                "--direction",
                "bigger",
                "-o",
                str(bigger),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "export",
                str(cur),
                "--format",
                "github-action-benchmark",
                "--direction",
                "smaller",
                "-o",
                str(smaller),
            ]
        )
        == 0
    )
    bigger_doc, smaller_doc = json.loads(bigger.read_text()), json.loads(smaller.read_text())
    validate_custom_benchmark_json(bigger_doc)
    validate_custom_benchmark_json(smaller_doc)
    fast = cells()[0]
    decode = next(e for e in bigger_doc if e["name"].startswith("decode_tok_s") and fast.cell_id in e["name"])
    assert decode["value"] == pytest.approx(80.0) and decode["unit"] == "tok/s" and decode["range"].startswith("± ")
    assert {e["name"].split()[0] for e in bigger_doc} == {"prefill_tok_s", "decode_tok_s"}
    assert {e["name"].split()[0] for e in smaller_doc} == {
        "ttft_ms",
        "itl_ms_p50",
        "itl_ms_p99",
        "peak_rss_bytes",
    }
    rss = next(e for e in smaller_doc if e["name"].startswith("peak_rss_bytes"))
    assert rss["unit"] == "MiB" and rss["value"] == pytest.approx(300.0)
    capsys.readouterr()
    assert main(["export", str(cur), "--format", "github-action-benchmark", "-o", str(bigger)]) == 2
    assert "needs --direction bigger" in capsys.readouterr().err


def test_pytest_benchmark_export_needs_one_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mixed = write(tmp_path / "mixed.csv", [row(c, host=h, fingerprint=f"fp-{h}") for c in cells() for h in ("a", "b")])
    output = tmp_path / "out.json"
    assert main(["export", str(mixed), "--format", "pytest-benchmark", "-o", str(output)]) == 2
    assert "export each with --host HOST" in capsys.readouterr().err and not output.exists()
    assert main(["export", str(mixed), "--format", "pytest-benchmark", "-o", str(output), "--host", "b"]) == 0
    assert json.loads(output.read_text())["machine_info"]["node"] == "b"


def test_export_takes_the_newest_row_across_a_driver_update(tmp_path: Path) -> None:
    """Same machine before and after a driver update (the old `fingerprint` column differs): one machine,
    and each cell's newest row (the one that finished last) is exported."""
    fast, other = cells()
    write(
        tmp_path / "runs" / "night1.csv",
        [row(c, fingerprint="old-550", gpu_driver="550", finished_utc="2025-01-01T03:00:00Z") for c in (fast, other)],
    )
    write(
        tmp_path / "runs" / "night2.csv",
        [
            row(
                c,
                decode=tuple(0.5 * v for v in STEADY_DECODE),
                fingerprint="old-560",
                gpu_driver="560",
                finished_utc="2025-01-02T03:00:00Z",
            )
            for c in (fast, other)
        ],
    )
    output = tmp_path / "out.json"
    assert main(["export", str(tmp_path / "runs"), "--format", "pytest-benchmark", "-o", str(output)]) == 0
    decode = [b for b in json.loads(output.read_text())["benchmarks"] if b["group"] == "decode"]
    assert len(decode) == 2 and all(b["stats"]["ops"] == pytest.approx(50.0, rel=1e-3) for b in decode)


def test_per_user_decode_and_parallel_are_exported(tmp_path: Path) -> None:
    one, four = parallel_cells()
    rows = [
        row(c, decode_tok_s_per_seq_mean=100.0 / c.parallel, decode_context_tokens=c.prompt_tokens) for c in (one, four)
    ]
    results_csv = write(tmp_path / "r.csv", rows)
    bigger, benchmark = tmp_path / "bigger.json", tmp_path / "bench.json"
    args = ["export", str(results_csv), "--format"]
    assert main([*args, "github-action-benchmark", "--direction", "bigger", "-o", str(bigger)]) == 0
    assert main([*args, "pytest-benchmark", "-o", str(benchmark)]) == 0
    per_user = {
        e["name"]: e["value"] for e in json.loads(bigger.read_text()) if e["name"].startswith("decode_tok_s_per")
    }
    assert sorted(per_user.values()) == [25.0, 100.0] and any(four.cell_id in name for name in per_user)
    exported = json.loads(benchmark.read_text())["benchmarks"]
    assert {b["params"]["parallel"] for b in exported} == {1, 4}
    assert {b["extra_info"]["decode_tok_s_per_seq_mean"] for b in exported} == {25.0, 100.0}
    # where each decode ran (after the prompt): a series that spans the change of protocol can be told apart
    assert {b["extra_info"]["decode_context_tokens"] for b in exported} == {one.prompt_tokens}

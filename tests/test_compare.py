"""bench compare: the regression gate on synthetic result CSVs (exit 0 ok, 1 regression, 2 cannot compare)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.compare import CompareOptions, compare_results
from bench.results import ResultRow, ResultsWriter, samples_to_text
from bench.runners.registry import quantization_catalog
from bench.stats import summarize
from bench.suite import Cell, expand, parse_suite
from tests.conftest import quick_suite_yaml

STEADY_DECODE = (100.0, 101.0, 99.0, 100.5, 99.5)
STEADY_PREFILL = (1000.0, 1010.0, 990.0, 1005.0, 995.0)


def cells(name: str = "nightly") -> list[Cell]:
    suite = parse_suite(quick_suite_yaml(name, knobs="knobs: {threads: [1, 2]}"), Path("suite.yaml"), quantization_catalog())
    return expand(suite)


def row(
    cell: Cell,
    decode: Sequence[float] = STEADY_DECODE,
    prefill: Sequence[float] = STEADY_PREFILL,
    host: str = "gpu-a",
    fingerprint: str = "fp-a",
    started: str = "2025-01-01T00:00:00Z",
    **extra: Any,
) -> ResultRow:
    pp, tg = summarize(prefill), summarize(decode)
    values: dict[str, Any] = {
        **cell.model_dump(),
        "cell_id": cell.cell_id,
        "status": "ok",
        "host": host,
        "fingerprint": fingerprint,
        "started_utc": started,
        "prefill_tok_s_mean": pp.mean,
        "prefill_tok_s_std": pp.std,
        "prefill_tok_s_cv_pct": pp.cv_pct,
        "decode_tok_s_mean": tg.mean,
        "decode_tok_s_std": tg.std,
        "decode_tok_s_cv_pct": tg.cv_pct,
        "prefill_tok_s_samples": samples_to_text(prefill),
        "decode_tok_s_samples": samples_to_text(decode),
        "ttft_ms_mean": 1000.0 * cell.prompt_tokens / pp.mean,
        "itl_ms_p50": 1000.0 / tg.median,
        "itl_ms_p99": 1000.0 / min(decode),
        "peak_rss_bytes": 300 * 2**20,
        "unstable": pp.unstable or tg.unstable,
    }
    values.update(extra)
    return ResultRow.model_validate(values)


def write(path: Path, rows: list[ResultRow]) -> Path:
    writer = ResultsWriter(path)
    for item in rows:
        writer.append(item)
    return path


def run_compare(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["compare", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def section(markdown: str, title: str) -> str:
    """The table under a `### title` heading."""
    after = markdown.split(f"### {title}\n\n", 1)[1]
    return after.split("\n\n", 1)[0]


def test_identical_results_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row(c) for c in cells()]
    base, cur = write(tmp_path / "base.csv", rows), write(tmp_path / "cur.csv", rows)
    code, out, _ = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 0
    assert "no regression in 2 cells" in out and "Welch" in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["exit_code"] == 0 and data["regressions"] == [] and len(data["cells"]) == 2


def test_decode_slowdown_beyond_noise_fails_naming_the_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fast, other = cells()
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    base = write(tmp_path / "base.csv", [row(fast), row(other)])
    cur = write(tmp_path / "cur.csv", [row(fast, decode=slow), row(other)])
    code, out, _ = run_compare(
        capsys, str(base), str(cur), "-o", str(tmp_path / "c.md"), "--json", str(tmp_path / "c.json")
    )
    assert code == 1
    assert "REGRESSION in 1 of 2 cells" in out
    regression_table = section(out, "Regressions")
    assert (
        fast.label in regression_table
        and fast.cell_id in regression_table
        and "decode_tok_s" in regression_table
    )
    assert "-20.0%" in regression_table and other.cell_id not in regression_table
    assert (tmp_path / "c.md").read_text() == out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["regressions"] == [
        {
            "cell_id": fast.cell_id,
            "host": "gpu-a",
            "label": fast.label,
            "status": "",
            "metrics": ["decode_tok_s", "itl_ms_p50", "itl_ms_p99"],
        }
    ]


def test_change_within_noise_passes_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cell, _) = cells()
    noisy = (100.0, 80.0, 120.0, 90.0, 110.0)
    base = write(tmp_path / "base.csv", [row(cell, decode=noisy)])
    cur = write(tmp_path / "cur.csv", [row(cell, decode=tuple(v - 8 for v in noisy))])
    code, out, _ = run_compare(capsys, str(base), str(cur), "--metrics", "decode_tok_s")
    assert code == 0
    noise_table = section(out, "Within noise (not counted)")
    assert "decode_tok_s" in noise_table and "-8.0%" in noise_table
    assert "unstable" in out  # the rows' CV is far over 5%


def test_mismatched_suites_cannot_be_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.csv", [row(c) for c in cells("nightly")])
    cur = write(tmp_path / "cur.csv", [row(c) for c in cells("weekly")])
    code, out, err = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 2
    assert "different suites: baseline has nightly, current has weekly" in err
    assert "cannot compare" in out
    assert json.loads((tmp_path / "c.json").read_text())["exit_code"] == 2


def test_unreadable_file_cannot_be_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.csv", [row(c) for c in cells()])
    broken = tmp_path / "cur.csv"
    broken.write_text(base.read_text().splitlines()[0] + "\nnightly,only,three\n")
    code, _, err = run_compare(capsys, str(base), str(broken))
    assert code == 2 and "cur.csv:2" in err and "Traceback" not in err
    code, _, err = run_compare(capsys, str(base), str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in err


def test_other_machine_needs_across_machines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.csv", [row(c) for c in cells()])
    cur = write(tmp_path / "cur.csv", [row(c, host="gpu-b", fingerprint="fp-b") for c in cells()])
    code, _, err = run_compare(capsys, str(base), str(cur))
    assert code == 2 and "different machines" in err and "--across-machines" in err
    code, out, _ = run_compare(capsys, str(base), str(cur), "--across-machines")
    assert code == 0 and "baseline measured on gpu-a (fp-a), current on gpu-b (fp-b)" in out
    mixed = write(
        tmp_path / "mixed.csv", [row(c, host=h, fingerprint=f"fp-{h}") for c in cells() for h in "xy"]
    )
    code, _, err = run_compare(capsys, str(base), str(mixed), "--across-machines")
    assert code == 2 and "was measured on 2 machines" in err


def test_per_metric_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cell, _) = cells()
    base = write(tmp_path / "base.csv", [row(cell)])
    cur = write(tmp_path / "cur.csv", [row(cell, decode=tuple(0.96 * v for v in STEADY_DECODE))])
    assert run_compare(capsys, str(base), str(cur), "--metrics", "decode_tok_s")[0] == 0
    code, out, _ = run_compare(capsys, str(base), str(cur), "--threshold", "decode_tok_s=3")
    assert code == 1 and "decode_tok_s 3%" in out
    assert run_compare(capsys, str(base), str(cur), "--threshold", "3", "--metrics", "decode_tok_s")[0] == 1
    code, _, err = run_compare(capsys, str(base), str(cur), "--threshold", "decode=3")
    assert code == 2 and "unknown metric 'decode'" in err


def test_memory_and_status_regressions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = cells()
    base = write(tmp_path / "base.csv", [row(first), row(second)])
    cur = write(
        tmp_path / "cur.csv",
        [
            row(first, peak_rss_bytes=360 * 2**20),
            ResultRow.model_validate(
                {
                    **second.model_dump(),
                    "cell_id": second.cell_id,
                    "status": "failed",
                    "reason": "worker died by SIGSEGV",
                    "host": "gpu-a",
                    "fingerprint": "fp-a",
                }
            ),
        ],
    )
    code, out, _ = run_compare(capsys, str(base), str(cur))
    assert code == 1 and "REGRESSION in 2 of 2 cells" in out
    assert "was ok, now failed: worker died by SIGSEGV" in out
    rss_line = next(line for line in out.splitlines() if "peak_rss_bytes" in line)
    assert "+20.0%" in rss_line and "threshold only" in rss_line


def test_quality_is_compared_only_on_the_same_text(tmp_path: Path) -> None:
    (cell, _) = cells()
    base = write(tmp_path / "base.csv", [row(cell, ppl=10.0, eval_text_sha256="aaa")])
    same = write(tmp_path / "same.csv", [row(cell, ppl=11.0, eval_text_sha256="aaa")])
    other = write(tmp_path / "other.csv", [row(cell, ppl=11.0, eval_text_sha256="bbb")])
    options = CompareOptions(metrics=("ppl",))
    assert compare_results([base], [same], options).exit_code == 1
    result = compare_results([base], [other], options)
    assert result.exit_code == 2 and "ppl not compared" in result.cells[0].notes[0]


def test_newest_row_per_cell_wins_in_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cell, _) = cells()
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    write(tmp_path / "base" / "b.csv", [row(cell, started="2025-01-02T00:00:00Z")])
    write(tmp_path / "base" / "a.csv", [row(cell, decode=slow, started="2025-01-01T00:00:00Z")])
    cur = write(tmp_path / "cur.csv", [row(cell, started="2025-01-03T00:00:00Z")])
    assert run_compare(capsys, str(tmp_path / "base"), str(cur))[0] == 0


def history(tmp_path: Path, nights: dict[str, list[Sequence[float]]]) -> Path:
    """DIR/<host>/<stamp>.csv with one decode sample set per night."""
    (cell, _) = cells()
    for host, decodes in nights.items():
        for night, decode in enumerate(decodes, start=1):
            write(
                tmp_path / "hist" / host / f"2025010{night}T020000Z.csv",
                [
                    row(
                        cell,
                        decode=decode,
                        host=host,
                        fingerprint=f"fp-{host}",
                        started=f"2025-01-0{night}T02:00:00Z",
                    )
                ],
            )
    return tmp_path / "hist"


def test_history_compares_the_newest_run_with_the_previous(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE, STEADY_DECODE, slow], "gpu-b": [STEADY_DECODE]})
    code, out, _ = run_compare(capsys, "--history", str(directory), "--metrics", "decode_tok_s")
    assert code == 1
    baseline_line = next(line for line in out.splitlines() if line.startswith("- baseline:"))
    current_line = next(line for line in out.splitlines() if line.startswith("- current:"))
    assert baseline_line.endswith("gpu-a/20250102T020000Z.csv") and current_line.endswith(
        "gpu-a/20250103T020000Z.csv"
    )
    assert "gpu-b: only one run" in out


def test_history_baseline_is_the_median_of_the_last_n(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    # One slow night after two normal ones: against the previous night only it looks like a 25% speed-up.
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE, STEADY_DECODE, slow, STEADY_DECODE]})
    code, out, _ = run_compare(capsys, "--history", str(directory), "--metrics", "decode_tok_s")
    assert code == 0 and "### Improvements" in out
    code, out, _ = run_compare(
        capsys, "--history", str(directory), "--last", "3", "--metrics", "decode_tok_s"
    )
    assert code == 0 and "### Improvements" not in out and "20250101T020000Z.csv" in out


def test_history_with_a_single_run_cannot_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE]})
    code, _, err = run_compare(capsys, "--history", str(directory))
    assert code == 2 and "no host under" in err and "gpu-a: 1" in err
    code, _, err = run_compare(capsys, "--history", str(tmp_path / "nowhere"))
    assert code == 2 and "not a folder" in err


def test_welch_t_test_known_values() -> None:
    from bench.stats import welch_t_test

    clear = welch_t_test([100, 101, 99], [80, 81, 79])
    assert clear is not None and clear.t == pytest.approx(-24.4949, rel=1e-4)
    assert clear.dof == pytest.approx(4.0)
    assert clear.significant and clear.critical == pytest.approx(2.776)
    # var/n: 20/3/4 = 1.667 and 100/3 = 33.33; t = 17/sqrt(35) = 2.874;
    # dof = 35^2 / (1.667^2/3 + 33.33^2/2) = 2.201
    unequal = welch_t_test([10, 12, 14, 16], [20, 30, 40])
    assert unequal is not None and unequal.dof == pytest.approx(2.2013, rel=1e-3)
    assert unequal.t == pytest.approx(2.8735, rel=1e-3) and not unequal.significant  # critical 4.303 at dof 2
    assert welch_t_test([1.0], [1.0, 2.0]) is None
    assert not welch_t_test([5, 5], [5, 5]).significant and welch_t_test([5, 5], [4, 4]).significant


def test_ttft_is_judged_on_its_own_repetitions(tmp_path: Path) -> None:
    (cell, _) = cells()
    steady = (500.0, 505.0, 495.0, 502.0, 498.0)
    slower = tuple(v * 1.2 for v in steady)
    noisy = (400.0, 700.0, 450.0, 800.0, 650.0)  # mean +20% too, but within its own spread

    def ttft_row(samples: tuple[float, ...]) -> ResultRow:
        return row(cell, ttft_ms_mean=summarize(samples).mean, ttft_ms_samples=samples_to_text(samples))

    base = write(tmp_path / "base.csv", [ttft_row(steady)])
    options = CompareOptions(metrics=("ttft_ms",))
    slow = compare_results([base], [write(tmp_path / "slow.csv", [ttft_row(slower)])], options)
    assert slow.exit_code == 1
    change = slow.cells[0].changes[0]
    assert change.verdict == "regression" and "ttft repetitions" in change.test
    noise = compare_results([base], [write(tmp_path / "noise.csv", [ttft_row(noisy)])], options)
    assert noise.exit_code == 0 and noise.cells[0].changes[0].verdict == "within-noise"

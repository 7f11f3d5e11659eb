"""bench compare: the regression gate on synthetic result CSVs (exit 0 ok, 1 regression, 2 cannot compare)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.cli import main
from bench.compare import CompareOptions, compare_results
from bench.hardware import stable_fingerprint
from bench.results import ResultRow, ResultsWriter, samples_to_text
from bench.runners.registry import quantization_catalog
from bench.stats import summarize
from bench.suite import Cell, expand, parse_suite
from tests.conftest import quick_suite_yaml

STEADY_DECODE = (100.0, 101.0, 99.0, 100.5, 99.5)
STEADY_PREFILL = (1000.0, 1010.0, 990.0, 1005.0, 995.0)


def cells(name: str = "nightly", threads: Sequence[int] = (1, 2)) -> list[Cell]:
    knobs = f"knobs: {{threads: [{', '.join(map(str, threads))}]}}"
    suite = parse_suite(quick_suite_yaml(name, knobs=knobs), Path("suite.yaml"), quantization_catalog())
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
    """What stands under a `### title` heading, up to the next heading."""
    after = markdown.split(f"### {title}\n\n", 1)[1]
    return after.split("\n#", 1)[0]


def test_identical_results_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [row(c) for c in cells()]
    base, cur = write(tmp_path / "base.csv", rows), write(tmp_path / "cur.csv", rows)
    code, out, _ = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 0
    assert "no regression in 2 cells" in out and "Welch" in out
    assert "false-discovery rate 5% (Benjamini-Hochberg) across 4 one-sided tests" in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["exit_code"] == 0 and data["regressions"] == [] and len(data["cells"]) == 2


def test_decode_slowdown_beyond_noise_fails_naming_the_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    assert fast.label in regression_table and fast.cell_id in regression_table and "decode_tok_s" in regression_table
    assert "-20.0%" in regression_table and other.cell_id not in regression_table
    # These rows carry no per-repetition ITL samples (as results written before they were recorded): the ITL
    # percentiles are judged by their threshold, and a note says so.
    assert "threshold only (no per-repetition samples in the CSV)" in regression_table
    assert "judged by threshold only, without a noise test: ttft_ms (2 cells), itl_ms_p50 (2 cells)" in out
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


def test_other_suites_cells_cannot_be_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write(tmp_path / "base.csv", [row(c) for c in cells("nightly")])
    cur = write(tmp_path / "cur.csv", [row(c) for c in cells("weekly", threads=(4, 8))])
    code, out, err = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 2
    assert "different suites: baseline has nightly, current has weekly" in err
    assert "cannot compare" in out
    assert json.loads((tmp_path / "c.json").read_text())["exit_code"] == 2


def test_a_renamed_suite_still_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cell_id hashes what a cell measures, not the suite's name: the same cells under a new name match."""
    base = write(tmp_path / "base.csv", [row(c) for c in cells("nightly")])
    cur = write(tmp_path / "cur.csv", [row(c) for c in cells("nightly-v2")])
    code, out, _ = run_compare(capsys, str(base), str(cur))
    assert code == 0 and "no regression in 2 cells" in out


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
    machine_a, machine_b = stable_fingerprint({"host": "gpu-a"}), stable_fingerprint({"host": "gpu-b"})
    assert code == 0 and f"baseline measured on gpu-a ({machine_a}), current on gpu-b ({machine_b})" in out
    mixed = write(tmp_path / "mixed.csv", [row(c, host=h, fingerprint=f"fp-{h}") for c in cells() for h in "xy"])
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
    code, _, err = run_compare(capsys, str(base), str(cur), "--fdr", "150")
    assert code == 2 and "--fdr '150': the percent must be a number from 0 to 100" in err


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


def test_history_compares_the_newest_run_with_the_previous(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE, STEADY_DECODE, slow], "gpu-b": [STEADY_DECODE]})
    code, out, _ = run_compare(capsys, "--history", str(directory), "--metrics", "decode_tok_s")
    assert code == 1
    baseline_line = next(line for line in out.splitlines() if line.startswith("- baseline:"))
    current_line = next(line for line in out.splitlines() if line.startswith("- current:"))
    assert baseline_line.endswith("gpu-a/20250102T020000Z.csv") and current_line.endswith("gpu-a/20250103T020000Z.csv")
    assert "gpu-b: only one run" in out


def test_history_baseline_is_the_last_n_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    # One slow night after two normal ones: against the previous night only it looks like a 25% speed-up.
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE, STEADY_DECODE, slow, STEADY_DECODE]})
    code, out, _ = run_compare(capsys, "--history", str(directory), "--metrics", "decode_tok_s")
    assert code == 0 and "### Improvements" in out
    code, out, _ = run_compare(capsys, "--history", str(directory), "--last", "3", "--metrics", "decode_tok_s")
    # Against 100, 100, 80 (mean 93.3) tonight's 100 is +7%, but well inside the spread of those nights.
    assert code == 0 and "### Improvements" not in out and "20250101T020000Z.csv" in out
    assert "### Within noise" in out and "vs 3 run means" in out


def test_history_with_a_single_run_cannot_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = history(tmp_path, {"gpu-a": [STEADY_DECODE]})
    code, _, err = run_compare(capsys, "--history", str(directory))
    assert code == 2 and "no host under" in err and "gpu-a: 1" in err
    code, _, err = run_compare(capsys, "--history", str(tmp_path / "nowhere"))
    assert code == 2 and "not a folder" in err


def test_welch_t_test_known_values() -> None:
    from scipy import stats as scipy_stats

    from bench.stats import welch_t_test

    clear = welch_t_test([100, 101, 99], [80, 81, 79])
    assert clear is not None and clear.t == pytest.approx(-24.4949, rel=1e-4)
    assert clear.dof == pytest.approx(4.0)
    # one-sided: P(T4 <= -24.49) = 8.2e-6 (scipy.stats.ttest_ind(equal_var=False, alternative="less"))
    assert clear.p_less == pytest.approx(8.25e-6, rel=1e-2) and clear.p_greater > 0.999
    # var/n: 20/3/4 = 1.667 and 100/3 = 33.33; t = 17/sqrt(35) = 2.874;
    # dof = 35^2 / (1.667^2/3 + 33.33^2/2) = 2.201
    unequal = welch_t_test([10, 12, 14, 16], [20, 30, 40])
    assert unequal is not None and unequal.dof == pytest.approx(2.2013, rel=1e-3)
    assert unequal.t == pytest.approx(2.8735, rel=1e-3)
    reference = scipy_stats.ttest_ind([20, 30, 40], [10, 12, 14, 16], equal_var=False, alternative="greater")
    assert unequal.p_greater == pytest.approx(reference.pvalue, rel=1e-9)
    assert welch_t_test([1.0], [1.0, 2.0]) is None
    same, shifted = welch_t_test([5, 5], [5, 5]), welch_t_test([5, 5], [4, 4])
    assert same is not None and same.p_less == pytest.approx(0.5)  # no spread, no difference: no evidence
    assert shifted is not None and shifted.p_less == 0.0  # no spread, a difference: certain


def test_exact_t_quantiles_and_prediction_test() -> None:
    from bench.stats import TTest, prediction_t_test

    # The table this replaced jumped to the normal 1.96 above 30 dof; at 31 dof the 97.5% quantile is 2.0395.
    assert TTest(t=2.0395, dof=31).p_greater == pytest.approx(0.025, abs=1e-4)
    assert TTest(t=1.96, dof=31).p_greater > 0.029
    # history 100, 92, 108, 95, 105: mean 100, s = sqrt(178/4) = 6.671; new 93:
    # t = -7 / (6.671 * sqrt(1 + 1/5)) = -0.9579 with 4 dof
    test = prediction_t_test([100, 92, 108, 95, 105], 93)
    assert test is not None and test.t == pytest.approx(-0.9579, rel=1e-3) and test.dof == 4
    assert prediction_t_test([100], 93) is None


def test_benjamini_hochberg_known_values() -> None:
    from bench.stats import benjamini_hochberg

    # sorted p (0.01, 0.02, 0.03, 0.5) x m/rank (4, 2, 4/3, 1) = (0.04, 0.04, 0.04, 0.5), then the running
    # minimum from the largest rank down; returned in the input order
    assert benjamini_hochberg([0.5, 0.03, 0.01, 0.02]) == pytest.approx([0.5, 0.04, 0.04, 0.04])
    assert benjamini_hochberg([]) == []


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
    assert change.verdict == "regression" and change.method == "welch" and "5+5 repetitions" in change.test
    noise = compare_results([base], [write(tmp_path / "noise.csv", [ttft_row(noisy)])], options)
    assert noise.exit_code == 0 and noise.cells[0].changes[0].verdict == "within-noise"


def jitter(mean: float, spread: float = 0.005) -> tuple[float, ...]:
    """Five repetitions around `mean`, within +-spread (relative)."""
    return tuple(mean * (1 + spread * f) for f in (0.0, 1.0, -1.0, 0.4, -0.4))


def itl_row(cell: Cell, p50: float, p99: float, **extra: Any) -> ResultRow:
    p50_reps, p99_reps = jitter(p50, 0.01), jitter(p99, 0.01)
    return row(
        cell,
        itl_ms_p50=summarize(p50_reps).mean,
        itl_ms_p99=summarize(p99_reps).mean,
        itl_ms_p50_samples=samples_to_text(p50_reps),
        itl_ms_p99_samples=samples_to_text(p99_reps),
        **extra,
    )


def test_tail_only_itl_regression_fails_naming_itl_p99(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Periodic stalls: p99 +30 %, the median token and decode tok/s unchanged."""
    fast, other = cells()
    base = write(tmp_path / "base.csv", [itl_row(fast, 10.0, 20.0), itl_row(other, 10.0, 20.0)])
    cur = write(tmp_path / "cur.csv", [itl_row(fast, 10.0, 26.0), itl_row(other, 10.0, 20.0)])
    code, out, _ = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 1
    regressions = section(out, "Regressions")
    assert "itl_ms_p99" in regressions and "+30.0%" in regressions and "Welch" in regressions
    assert "itl_ms_p50" not in regressions and "decode_tok_s" not in regressions
    data = json.loads((tmp_path / "c.json").read_text())
    assert [r["metrics"] for r in data["regressions"]] == [["itl_ms_p99"]]


def noise_row(cell: Cell, rng: Any, cv: float) -> ResultRow:
    """Six metrics with per-repetition samples, each drawn around a fixed mean: no real change anywhere."""
    means = {
        "prefill_tok_s": 1000.0,
        "decode_tok_s": 100.0,
        "ttft_ms": 64.0,
        "itl_ms_p50": 10.0,
        "itl_ms_p99": 14.0,
        "energy_j_per_decode_token": 0.5,
    }
    reps = {name: [float(v) for v in rng.normal(mean, cv * mean, 5)] for name, mean in means.items()}
    mean_columns = {
        "prefill_tok_s": "prefill_tok_s_mean",
        "decode_tok_s": "decode_tok_s_mean",
        "ttft_ms": "ttft_ms_mean",
    }
    values: dict[str, Any] = {f"{name}_samples": samples_to_text(v) for name, v in reps.items()}
    values |= {mean_columns.get(name, name): summarize(v).mean for name, v in reps.items()}
    return row(cell, decode=reps["decode_tok_s"], prefill=reps["prefill_tok_s"], **values)


def test_pure_noise_over_40_cells_and_6_metrics_is_no_regression(tmp_path: Path) -> None:
    """240 one-sided tests where nothing changed: about 5 % of them have p < 0.05 by chance; Benjamini-Hochberg
    at the documented 5 % false-discovery rate keeps all of them from failing the gate."""
    import numpy as np

    rng = np.random.default_rng(2024)
    grid = cells(threads=range(1, 41))
    cv = 0.04
    base = write(tmp_path / "base.csv", [noise_row(c, rng, cv) for c in grid])
    cur = write(tmp_path / "cur.csv", [noise_row(c, rng, cv) for c in grid])
    options = CompareOptions(
        metrics=("prefill_tok_s", "decode_tok_s", "ttft_ms", "itl_ms_p50", "itl_ms_p99", "energy_j_per_token"),
        default_threshold_pct=2.0,
    )
    result = compare_results([base], [cur], options)
    changes = [change for cell in result.cells for change in cell.changes]
    assert len(result.cells) == 40 and len(changes) == 240 and result.tests_in_family == 240
    assert {c.method for c in changes} == {"welch"}
    # Without the correction these would have failed the gate: worse than the threshold and p < 0.05.
    uncorrected = [c for c in changes if c.worse and c.beyond_threshold and c.p_worse is not None and c.p_worse < 0.05]
    assert len(uncorrected) >= 5
    assert result.exit_code == 0 and result.regressed_cells == []
    assert result.fdr_pct == 5.0 and "false-discovery control at 5%" in result.test


HARDWARE = {
    "cpu_brand": "AMD EPYC 7763",
    "cpu_physical_cores": 64,
    "cpu_logical_cores": 128,
    "gpu_name": "NVIDIA L4",
    "gpu_count": 1,
    "os": "Linux-6.1.0-18-amd64",
    "gpu_driver": "550.54.15",
}


def old_rule_fingerprint(fields: dict[str, Any]) -> str:
    """The fingerprint before stable matching: it hashed the exact MemTotal and the GPU driver."""
    import hashlib

    parts = [fields["host"], fields["cpu_brand"], fields["ram_total_bytes"], fields["gpu_name"], fields["gpu_driver"]]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def machine_row(cell: Cell, ram_total_bytes: int, decode: Sequence[float] = STEADY_DECODE, **changes: Any) -> ResultRow:
    fields = {**HARDWARE, "host": "gpu-a", "ram_total_bytes": ram_total_bytes, **changes}
    return row(cell, decode=decode, **{**fields, "fingerprint": old_rule_fingerprint(fields)})


def test_driver_update_alone_passes_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Also: the CSVs' `fingerprint` column differs (old rule, driver and exact MemTotal hashed), yet the cells
    match by the machine key recomputed from the hardware columns (MemTotal moved by 4 MiB: same GiB)."""
    first, second = cells()
    base = write(tmp_path / "base.csv", [machine_row(c, 64 * 2**30 - 2**24) for c in (first, second)])
    cur = write(
        tmp_path / "cur.csv",
        [machine_row(c, 64 * 2**30 - 2**24 - 2**22, gpu_driver="560.35.03") for c in (first, second)],
    )
    frames = [pd.read_csv(p) for p in (base, cur)]
    assert frames[0]["fingerprint"][0] != frames[1]["fingerprint"][0]
    code, out, _ = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    assert code == 0 and "no regression in 2 cells" in out
    changed = section(out, "Changed since baseline")
    assert "| gpu-a | gpu_driver | 550.54.15 | 560.35.03 | 2 |" in changed
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["changed_since_baseline"] == [
        {"host": "gpu-a", "column": "gpu_driver", "baseline": "550.54.15", "current": "560.35.03", "cells": 2}
    ]


def test_kernel_update_with_a_real_slowdown_fails_and_notes_the_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = cells()
    ram = 64 * 2**30
    base = write(tmp_path / "base.csv", [machine_row(c, ram) for c in (first, second)])
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    kernel = "Linux-6.12.9-amd64"
    cur = write(tmp_path / "cur.csv", [machine_row(first, ram, slow, os=kernel), machine_row(second, ram, os=kernel)])
    code, out, _ = run_compare(capsys, str(base), str(cur), "--metrics", "decode_tok_s")
    assert code == 1 and "REGRESSION in 1 of 2 cells" in out
    assert first.cell_id in section(out, "Regressions") and "-20.0%" in section(out, "Regressions")
    assert "| gpu-a | os | Linux-6.1.0-18-amd64 | Linux-6.12.9-amd64 | 2 |" in section(out, "Changed since baseline")


def test_rows_measured_under_system_warnings_are_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = cells()
    base = write(tmp_path / "base.csv", [row(first), row(second)])
    cur = write(
        tmp_path / "cur.csv", [row(first, system_warnings="CPU governor is powersave"), row(second, system_warnings="")]
    )
    code, out, _ = run_compare(capsys, str(base), str(cur), "--html", str(tmp_path / "c.html"))
    assert code == 0
    assert "| current | gpu-a | CPU governor is powersave | 1 |" in section(out, "Measured under system warnings")
    page = (tmp_path / "c.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<td>CPU governor is powersave</td>" in page


def test_history_with_five_runs_tests_against_night_to_night_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each night's repetitions agree within 0.5 %, but the nights themselves spread (run means 100, 92, 108, 95,
    105: mean 100, s 6.7). Tonight's 93 is -7 %: inside that spread, so with five runs as the unit it is noise;
    pooling the repetitions of two nights (which hide the drift) calls the same -7 % a regression."""
    nights = [jitter(m) for m in (100.0, 92.0, 108.0, 95.0, 105.0, 93.0)]
    directory = history(tmp_path, {"gpu-a": nights})
    code, out, _ = run_compare(capsys, "--history", str(directory), "--last", "5", "--metrics", "decode_tok_s")
    assert code == 0
    noise = section(out, "Within noise (not counted)")
    assert "-7.0%" in noise and "4 dof, vs 5 run means" in noise
    assert "history: 1 cells tested with whole runs as the unit" in out
    code, out, _ = run_compare(capsys, "--history", str(directory), "--last", "2", "--metrics", "decode_tok_s")
    assert code == 1 and "-7.0%" in section(out, "Regressions") and "10+5 repetitions" in section(out, "Regressions")
    assert "only 2 baseline run(s), fewer than 3: tested on per-repetition samples" in out


def test_newest_row_is_the_one_that_finished_last(tmp_path: Path) -> None:
    """One rule (bench.results.select) for compare, export, trend and report: finish time, then start time,
    then reading order. A row without times is never taken as the oldest: it is placed at the last time its file
    records, else at the file's modification time (c.csv, written just now, is the newest here)."""
    from bench.report.data import merge_newest
    from bench.results import read_results
    from bench.results.select import newest_rows

    (cell, _) = cells()
    slow = tuple(0.8 * v for v in STEADY_DECODE)
    write(tmp_path / "runs" / "a.csv", [row(cell, started="2025-01-01T00:00:00Z", finished_utc="2025-01-05T00:00:00Z")])
    write(
        tmp_path / "runs" / "b.csv",
        [row(cell, decode=slow, started="2025-01-03T00:00:00Z", finished_utc="2025-01-03T01:00:00Z")],
    )
    write(tmp_path / "runs" / "c.csv", [row(cell, decode=slow, started="", finished_utc="")])
    frame = read_results([tmp_path / "runs"])
    for newest in (newest_rows(frame), merge_newest(frame, keep_all=False)):
        assert len(newest) == 1 and newest["source_file"].iloc[0].endswith("c.csv")
    os.utime(tmp_path / "runs" / "c.csv", (0, 0))  # a file from 1970 is older than every stamped row
    frame = read_results([tmp_path / "runs"])
    assert newest_rows(frame)["source_file"].iloc[0].endswith("a.csv")


def test_a_csv_written_by_the_previous_main_still_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tests/fixtures/compat/old-main.csv holds cell ids by the old rule (suite name, repetitions hashed in) and
    a fingerprint by the old rule; tonight's rows carry today's ids. Cells match by the id recomputed from the
    columns and by the recomputed machine key, so the 20 % slowdown of one cell is caught."""
    from bench.suite import cell_id_of

    old = Path(__file__).parent / "fixtures" / "compat" / "old-main.csv"
    tonight = pd.read_csv(old, dtype=str, keep_default_na=False)
    tonight["cell_id"] = [cell_id_of(r) for r in pd.read_csv(old).to_dict("records")]
    tonight["fingerprint"] = "new-rule-id"
    slow = [samples_to_text(0.8 * float(v) for v in text.split(";")) for text in tonight["decode_tok_s_samples"]]
    tonight.loc[0, ["decode_tok_s_samples", "decode_tok_s_mean"]] = [
        slow[0],
        str(0.8 * float(tonight["decode_tok_s_mean"][0])),
    ]
    assert not set(tonight["cell_id"]) & set(pd.read_csv(old)["cell_id"])
    current = tmp_path / "tonight.csv"
    tonight.to_csv(current, index=False, lineterminator="\n")
    code, out, _ = run_compare(
        capsys, str(old), str(current), "--metrics", "decode_tok_s", "--json", str(tmp_path / "c.json")
    )
    data = json.loads((tmp_path / "c.json").read_text())
    assert code == 1 and len(data["cells"]) == 4 and data["only_in_baseline"] == data["only_in_current"] == []
    assert [r["cell_id"] for r in data["regressions"]] == [tonight["cell_id"][0]]


def parallel_cells() -> list[Cell]:
    """One cell measured with 1 and with 4 concurrent sequences (otherwise the same)."""
    suite = parse_suite(
        quick_suite_yaml("nightly", knobs="knobs: {threads: [1], parallel: [1, 4]}"),
        Path("suite.yaml"),
        quantization_catalog(),
    )
    return expand(suite)


def test_cells_differing_in_parallel_are_never_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, four = parallel_cells()
    assert (one.parallel, four.parallel) == (1, 4) and one.cell_id != four.cell_id
    base = write(tmp_path / "base.csv", [row(one)])
    cur = write(tmp_path / "cur.csv", [row(four, decode=tuple(0.5 * v for v in STEADY_DECODE))])
    code, out, err = run_compare(capsys, str(base), str(cur))
    assert code == 2 and "no cell in common" in out + err


def test_synthetic_and_real_weights_of_one_cell_are_never_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A `fallback: synthetic` cell keeps its cell_id on either weights; the gate keeps the two apart."""
    one, _ = parallel_cells()
    base = write(tmp_path / "base.csv", [row(one, weights="synthetic")])
    cur = write(tmp_path / "cur.csv", [row(one, decode=tuple(0.5 * v for v in STEADY_DECODE))])
    code, out, err = run_compare(capsys, str(base), str(cur))
    assert code == 2 and "no cell in common" in out + err
    same = write(tmp_path / "same.csv", [row(one, weights="synthetic", decode=tuple(0.5 * v for v in STEADY_DECODE))])
    code, _, _ = run_compare(capsys, str(base), str(same))
    assert code == 1  # synthetic against synthetic is judged as any cell


def test_per_user_decode_is_gated_on_its_own_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4 users each 20 % slower: the 4-sequence cell regresses and the 1-sequence cell passes. Per-user decode is
    the aggregate / 4 on the aggregate's samples, so beside decode_tok_s it is not tested again (one regression
    counted once); asked for alone, it is tested on those samples."""
    one, four = parallel_cells()
    slow = tuple(0.8 * v for v in STEADY_DECODE)

    def rows(four_decode: Sequence[float]) -> list[ResultRow]:
        return [
            row(one, decode_tok_s_per_seq_mean=summarize(STEADY_DECODE).mean),
            row(four, decode=four_decode, decode_tok_s_per_seq_mean=summarize(four_decode).mean / 4),
        ]

    base, cur = write(tmp_path / "base.csv", rows(STEADY_DECODE)), write(tmp_path / "cur.csv", rows(slow))
    code, _, _ = run_compare(capsys, str(base), str(cur), "--json", str(tmp_path / "c.json"))
    data = json.loads((tmp_path / "c.json").read_text())
    assert code == 1
    assert [r["cell_id"] for r in data["regressions"]] == [four.cell_id]
    assert "decode_tok_s" in data["regressions"][0]["metrics"]
    assert "decode_tok_s_per_seq" not in data["regressions"][0]["metrics"]
    code, _, _ = run_compare(
        capsys, str(base), str(cur), "--metrics", "decode_tok_s_per_seq", "--json", str(tmp_path / "d.json")
    )
    data = json.loads((tmp_path / "d.json").read_text())
    cell = next(c for c in data["cells"] if c["cell_id"] == four.cell_id)
    per_user = next(m for m in cell["changes"] if m["metric"] == "decode_tok_s_per_seq")
    assert code == 1 and per_user["baseline"] == pytest.approx(25.0) and per_user["change_pct"] == pytest.approx(-20.0)
    assert per_user["method"] == "welch"

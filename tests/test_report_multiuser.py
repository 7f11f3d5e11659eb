"""Issue 23's acceptance, report side: one user or all users by name, burst capacity on percentiles, a failure
tonight never hidden behind last week's figures, and the gate failing on cells that are not measured.

Fixture: tests/fixtures/report/capacity.csv (parallel 1/4/16 on a GPU and a CPU, gpu-a at 64 skipped) with
capacity.yaml; the golden files of every section for it are tests/fixtures/report/golden/multi-user/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.hardware import stable_fingerprint
from bench.report.build import load_report_data
from bench.report.derived import decode_context, roofline
from bench.report.markdown import render_markdown
from bench.report.sections import summary
from bench.results import ResultRow, read_results
from bench.results.select import newest_rows
from bench.run import build_row
from bench.run.host import RowOut
from bench.run.stamp import with_finished_stamp
from tests.test_compare import STEADY_DECODE, cells, row, run_compare, write
from tests.test_hardware import make_fp

FIXTURES = Path(__file__).parent / "fixtures" / "report"
SuiteWriter = Callable[[str], Path]


def _suite(write_suite: SuiteWriter, extra: str = "", costs: bool = True) -> Path:
    text = (FIXTURES / "capacity.yaml").read_text()
    if not costs:
        text = text[: text.index("costs:")]
    return write_suite(text + extra)


def test_min_decode_is_per_user_the_np16_cpu_row_no_longer_passes_20(write_suite: SuiteWriter) -> None:
    """The CPU at 16 sequences decodes 64 tok/s in all, 4 tok/s per user: `min_decode_tok_s: 20` rules it out."""
    suite = _suite(write_suite, "constraints: {min_decode_tok_s: 20}\n")
    table = load_report_data([FIXTURES / "capacity.csv"], suite_path=suite).recommendation.table
    cpu_16 = table[(table["device_id"] == "cpu") & (table["parallel"] == 16)].iloc[0]
    assert not cpu_16["eligible"]
    assert "decode 1.8 tok/s per user at depth 16,384 < 20 required" in cpu_16["reasons"]


def test_the_recommendation_is_one_user_unless_the_suite_asks_for_throughput(write_suite: SuiteWriter) -> None:
    """Without costs the ranking is decode per user: a one-sequence row wins, though 16 GPU users decode 12×
    more in all. With costs (a throughput question) a row of N users may win, but only one whose users get the
    SLO at every depth."""
    speed = load_report_data([FIXTURES / "capacity.csv"], suite_path=_suite(write_suite, costs=False))
    best = speed.recommendation.best
    assert best is not None and best["parallel"] == 1 and speed.recommendation.ranking.endswith("per user")
    text = render_markdown(summary.build(speed), "plots")
    assert (
        "Fastest decode for one user: **smollm2-135m Q4_1 np1 nglall on rig / gpu-a** at 100.0 tok/s per user" in text
    )
    cost = load_report_data([FIXTURES / "capacity.csv"], suite_path=_suite(write_suite)).recommendation
    assert cost.best is not None and cost.best["parallel"] == 4  # np16 is cheaper per token, but misses the SLO
    gpu_16 = cost.table[(cost.table["device_id"] == "gpu-a") & (cost.table["parallel"] == 16)].iloc[0]
    assert gpu_16["reasons"].startswith("16 users at once miss the SLO at depth 16,384: TTFT p99")


def test_pareto_and_across_devices_rank_by_per_user_speed(write_suite: SuiteWriter) -> None:
    analysis = load_report_data([FIXTURES / "capacity.csv"], suite_path=_suite(write_suite))
    configs = analysis.data.configs
    fronts = configs[configs["front_speed"].astype(bool)]
    assert set(fronts["parallel"]) == {1}  # 16 users together are not faster for any one of them


def test_roofline_at_n_sequences_counts_one_weight_read_per_step() -> None:
    """The quickstart's np4 row: 163.5 tok/s for all 4 users against a one-stream roofline of 343.7 tok/s reads
    ≈ 12 % (4 tokens per weight read), not 48 %."""
    weights = 13.2e9 / 343.7
    frame = pd.DataFrame(
        {
            "n_params": [np.nan, np.nan],
            "bits_per_weight": [np.nan, np.nan],
            "model_file_bytes": [weights, weights],
            "est_weights_bytes": [np.nan, np.nan],
            "tied_embeddings": [True, True],
            "kv_cache_bytes": [0.0, 0.0],
            "est_kv_bytes": [0.0, 0.0],  # depth 0: the KV read is left out of this check
            "n_ctx": [4096, 4096],
            "depth": [0, 0],
            "gen_tokens": [128, 128],
            "parallel": [1, 4],
            "bandwidth_gbs": [13.2, 13.2],
            "decode_tok_s_mean": [120.9, 163.5],
        }
    )
    bound = roofline(frame)
    assert bound["roofline_tok_s"].tolist() == pytest.approx([343.7, 4 * 343.7])
    assert (
        bound["roofline_pct"].iloc[1] == pytest.approx(100 * 163.5 / (4 * 343.7))
        and 11 < bound["roofline_pct"].iloc[1] < 13
    )


def test_an_old_csv_reads_as_decoded_at_its_depth() -> None:
    """tests/fixtures/compat/old-main.csv predates decode_context_tokens: its rows decoded at `depth`."""
    old = read_results([Path(__file__).parent / "fixtures" / "compat" / "old-main.csv"])
    assert old["decode_context_tokens"].isna().all()
    assert decode_context(old).tolist() == old["depth"].astype(float).tolist()


def test_roofline_reads_the_kv_at_the_context_the_decode_had() -> None:
    """Decode follows the prompt: the KV read per step is at decode_context_tokens + gen / 2 (older rows: depth)."""
    frame = pd.DataFrame(
        {
            "model_file_bytes": [1e8, 1e8],
            "tied_embeddings": [True, True],
            "kv_cache_bytes": [4096 * 1000.0] * 2,
            "n_ctx": [4096, 4096],
            "depth": [1024, 1024],
            "decode_context_tokens": [1024 + 512, np.nan],
            "gen_tokens": [128, 128],
            "parallel": [1, 1],
            "bandwidth_gbs": [10.0, 10.0],
            "decode_tok_s_mean": [50.0, 50.0],
        }
    )
    assert roofline(frame)["bytes_per_step"].tolist() == pytest.approx([1e8 + 1000 * 1600, 1e8 + 1000 * 1088])


def _two_runs(folder: Path, tonight_status: str, stamped: bool = True) -> tuple[Path, Path]:
    """Last week: both cells ok. Tonight (a later file): the threads-1 cell failed (stamped or not), the other ok."""
    one, two = cells()
    last_week = write(
        folder / "2025-01-01.csv",
        [row(c, started="2025-01-01T00:00:00Z", finished_utc="2025-01-01T00:10:00Z") for c in (one, two)],
    )
    failed = ResultRow.model_validate(
        {
            **one.model_dump(),
            "cell_id": one.cell_id,
            "status": tonight_status,
            "reason": "worker died: SIGSEGV",
            "host": "gpu-a",
            "fingerprint": "fp-a",
            "finished_utc": "2025-01-08T00:05:00Z" if stamped else "",
        }
    )
    ok = row(two, started="2025-01-08T00:06:00Z", finished_utc="2025-01-08T00:10:00Z")
    return last_week, write(folder / "2025-01-08.csv", [failed, ok])


@pytest.mark.parametrize("stamped", [True, False])
def test_a_cell_that_failed_tonight_is_shown_failed_not_last_weeks_figures(tmp_path: Path, stamped: bool) -> None:
    """Unstamped: a failure written by an older bench, placed at the last time its own file records."""
    _two_runs(tmp_path / "runs", "failed", stamped)
    analysis = load_report_data([tmp_path / "runs"])
    assert sorted(analysis.data.rows["status"]) == ["failed", "ok"]
    assert len(analysis.data.measured) == 1
    text = render_markdown(summary.build(analysis), "plots")
    assert "Not measured: 1 failed" in text
    newest = newest_rows(read_results([tmp_path / "runs"]))
    assert sorted(newest["status"]) == ["failed", "ok"]


def test_export_and_trend_drop_the_cell_that_failed_tonight(tmp_path: Path) -> None:
    from bench.compare.export import measured_rows
    from bench.compare.trend import write_trend

    last_week, tonight = _two_runs(tmp_path / "runs", "failed")
    assert len(measured_rows([tmp_path / "runs"])) == 1  # the failed cell's old figures are not exported
    # The trend keeps last week's point in the plot but does not call it the latest: the latest run (placed at
    # its start, 00:06) failed.
    trend = write_trend(tmp_path / "runs", tmp_path / "trend" / "trend.md", metrics=("decode_tok_s",)).markdown
    text = trend.read_text()
    failed_cell = text.split("### ")[1]  # cells in file order: the threads-1 cell, which failed tonight
    assert "**Latest run (2025-01-08 00:06 UTC): failed: worker died: SIGSEGV.**" in failed_cell
    assert "| decode_tok_s | 1 | 100.0 | failed | – | 100.0 |" in failed_cell
    ok_cell = text.split("### ")[2]
    assert "Latest run" not in ok_cell and "| decode_tok_s | 2 | 100.0 | 100.0 | +0.0% | 100.0 |" in ok_cell


def test_compare_fails_on_a_cell_missing_or_skipped_tonight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one, two = cells()
    base = write(tmp_path / "base.csv", [row(one), row(two)])
    missing = write(tmp_path / "missing.csv", [row(two)])
    code, out, _ = run_compare(capsys, str(base), str(missing))
    assert code == 1 and "not measured: was ok, now missing" in out
    code, out, _ = run_compare(capsys, str(base), str(missing), "--allow-missing")
    assert code == 0 and "only in baseline" in out
    skipped_row = ResultRow.model_validate(
        {**one.model_dump(), "cell_id": one.cell_id, "status": "skipped", "reason": "model file gone", "host": "gpu-a"}
    )
    skipped = write(tmp_path / "skipped.csv", [skipped_row, row(two)])
    code, out, _ = run_compare(capsys, str(base), str(skipped), "--json", str(tmp_path / "c.json"))
    assert code == 1 and "not measured: was ok, now skipped: model file gone" in out
    assert json.loads((tmp_path / "c.json").read_text())["exit_code"] == 1
    assert run_compare(capsys, str(base), str(skipped), "--allow-missing")[0] == 0


def test_compare_does_not_judge_decode_measured_at_another_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A baseline from before decode followed the prompt (decode_context_tokens blank: it decoded at depth)
    against tonight's (depth + prompt): decode is slower for the longer context, not for a regression, so the
    decode figures are noted, not tested; prefill still is. The same context on both sides is tested."""
    one, _ = cells()
    context = one.depth + one.prompt_tokens
    slower = [0.8 * v for v in STEADY_DECODE]
    base = write(tmp_path / "base.csv", [row(one)])
    tonight = write(tmp_path / "now.csv", [row(one, decode=slower, decode_context_tokens=context)])
    code, out, _ = run_compare(capsys, str(base), str(tonight))
    assert code == 0 and "decode figures not compared: decoded after depth" in out and f"after {context} now" in out
    base_new = write(tmp_path / "base-new.csv", [row(one, decode_context_tokens=context)])
    code, out, _ = run_compare(capsys, str(base_new), str(tonight))
    assert code == 1 and "decode_tok_s" in out


def test_the_gpu_model_is_part_of_the_machine_key() -> None:
    machine = {"host": "box", "cpu_brand": "EPYC", "cpu_physical_cores": 8, "gpu_count": 1}
    h100 = stable_fingerprint({**machine, "gpu_name": "NVIDIA H100 80GB HBM3"})
    assert h100 != stable_fingerprint({**machine, "gpu_name": "NVIDIA H200"})
    assert stable_fingerprint(machine) == stable_fingerprint({**machine, "gpu_name": ""})


def test_every_outcome_is_stamped() -> None:
    one, _ = cells()
    for status in ("skipped", "failed", "timeout"):
        written = build_row(RowOut(one, status, "why"), make_fp(), "run1")
        assert written.finished_utc.endswith("Z") and written.finished_utc.startswith("20")
    assert with_finished_stamp({"finished_utc": "2025-01-01T00:00:00Z"})["finished_utc"] == "2025-01-01T00:00:00Z"


def test_quality_tables_name_their_baseline_and_a_quantized_one_is_a_lower_bound() -> None:
    from bench.report.baseline import loss_label, lower_bound_note

    q8 = pd.DataFrame({"baseline_quantization": ["Q8_0", "Q8_0", ""]})
    assert loss_label("kld", q8) == "KLD vs Q8_0" and loss_label("dppl", q8) == "ΔPPL vs Q8_0 (%)"
    assert "Q8_0 is itself quantized" in lower_bound_note(q8) and "lower bound" in lower_bound_note(q8)
    assert lower_bound_note(pd.DataFrame({"baseline_quantization": ["F16"]})) == ""
    both = pd.DataFrame({"baseline_quantization": ["F16", "Q8_0"]})
    assert loss_label("kld", both) == "KLD vs each model's baseline (F16, Q8_0)"

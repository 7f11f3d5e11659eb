"""The report's Capacity and Time-to-answer sections, and the most-users pick.

Golden test: tests/fixtures/report/capacity.csv (made by make_fixtures.py: parallel 1/4/16 at depths 0 and
16,384 on a "gpu-a" GPU and a "cpu" of one machine) with capacity.yaml (SLO, costs). The rendered sections are
compared with tests/fixtures/report/golden/capacity/*.md; after an intended change regenerate them with
BENCH_UPDATE_GOLDEN=1 (as tests/test_report.py does) and read the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bench.report import write_report
from bench.report.analysis import Analysis
from bench.report.answer_time import answer_times, thinking_budgets
from bench.report.build import load_report_data
from bench.report.capacity import (
    SLO_DEFAULT,
    SLO_FROM_SUITE,
    SLO_NO_SUITE,
    capacity_table,
    default_slo,
    slo_of,
)
from bench.report.data import normalize
from bench.report.economics import HOURS_PER_YEAR
from bench.report.markdown import render_markdown
from bench.report.sections import answer_time, capacity, method, recommendations
from bench.runners.registry import quantization_catalog
from bench.stats import time_to_generate
from bench.suite import Slo, load_suite

FIXTURES = Path(__file__).parent / "fixtures" / "report"
GOLDEN = FIXTURES / "golden" / "capacity"
SLO = Slo(max_ttft_ms=2000, min_user_tok_s=10)


@pytest.fixture(scope="module")
def analysis() -> Analysis:
    return load_report_data([FIXTURES / "capacity.csv"], suite_path=FIXTURES / "capacity.yaml")


@pytest.mark.parametrize("name", ["capacity", "answer_time"])
def test_sections_match_golden_files(analysis: Analysis, name: str) -> None:
    section = {"capacity": capacity, "answer_time": answer_time}[name]
    text = render_markdown(section.build(analysis), "plots")
    golden = GOLDEN / f"{name}.md"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; create it with BENCH_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"{name} differs from {golden}"


def _by_device_depth(analysis: Analysis) -> pd.DataFrame:
    table = analysis.capacity.table
    return table.set_index([table["device_id"], table["depth"].astype(int)])


def test_capacity_per_device_and_depth_and_the_cost_flip(analysis: Analysis) -> None:
    table = _by_device_depth(analysis)
    assert table["capacity"].to_dict() == {("cpu", 0): 4, ("cpu", 16384): 1, ("gpu-a", 0): 16, ("gpu-a", 16384): 4}
    assert table.loc[("gpu-a", 16384), "limit"] == "TTFT p99 2,320 ms > 2,000 ms at 16 users"
    assert table.loc[("cpu", 16384), "limit"] == (
        "time per token p99 200.0 ms > 100.0 ms (5.0 tok/s per user < 10) at 4 users"
    )
    assert table.loc[("cpu", 16384), "noisy"] and not table.loc[("cpu", 0), "noisy"]  # the deciding row's ⚑
    # One user: the CPU is cheaper per token; at capacity the GPU is.
    one, full = table["usd_per_mtok_one_user"], table["usd_per_mtok_at_capacity"]
    assert one[("cpu", 0)] < one[("gpu-a", 0)] and full[("gpu-a", 0)] < full[("cpu", 0)]


def test_cost_at_capacity_is_the_report_cost_formula_at_the_aggregate_decode(analysis: Analysis) -> None:
    gpu_hourly = 3000 / (3 * HOURS_PER_YEAR) + 400 / 1000 * 0.30
    table = _by_device_depth(analysis)
    # The device is busy with each request's 512-token prompt (at the aggregate prefill rate) and its 128 tokens.
    at_16 = 128 / (512 / 14000 + 128 / 1200)  # generated tok per busy second, 16 users at once
    at_1 = 128 / (512 / 8000 + 128 / 100)
    assert table.loc[("gpu-a", 0), "usd_per_mtok_at_capacity"] == pytest.approx(gpu_hourly / (at_16 * 3600) * 1e6)
    assert table.loc[("gpu-a", 0), "usd_per_mtok_one_user"] == pytest.approx(gpu_hourly / (at_1 * 3600) * 1e6)
    decode_only = gpu_hourly / (1200 * 3600) * 1e6  # what a decode-only figure said: 26 % low here
    assert table.loc[("gpu-a", 0), "usd_per_mtok_at_capacity"] > 1.3 * decode_only
    configs = analysis.data.configs  # the per-configuration cost (economics.add_costs) at parallel 16, depth 0
    at_16 = configs[(configs["device_id"] == "gpu-a") & (configs["parallel"] == 16)]
    assert at_16["usd_per_mtok"].iloc[0] == pytest.approx(table.loc[("gpu-a", 0), "usd_per_mtok_at_capacity"])


def test_most_users_pick_and_its_reason(analysis: Analysis) -> None:
    pick = analysis.recommendation.most_users
    assert pick is not None and (pick.device, pick.users, pick.at_least) == ("rig / gpu-a", 4, False)
    assert pick.limiting_depth == 16384 and pick.decode_tok_s == pytest.approx(220.0)
    text = render_markdown(recommendations.build(analysis), "plots")
    assert "Most users at the SLO: **smollm2-135m Q4_1 np4 nglall on rig / gpu-a** — 4 users at the SLO" in text


def test_most_users_pick_respects_the_constraints(write_suite: Callable[[str], Path]) -> None:
    """gpu-a at 4 sequences holds 296 MiB (310 MB): a 0.28 GB limit (max_memory_gb is in GB, 1e9 bytes) rules
    it out, so the CPU (1 user at every depth, 264 MiB = 277 MB) is the pick; with 0.2 GB nothing qualifies."""
    suite_text = (FIXTURES / "capacity.yaml").read_text()
    for limit, device in ((0.28, "rig / cpu"), (0.2, None)):
        suite = write_suite(suite_text + f"constraints: {{max_memory_gb: {limit}}}\n")
        pick = load_report_data([FIXTURES / "capacity.csv"], suite_path=suite).recommendation.most_users
        assert (pick.device if pick else None) == device, limit
        assert pick is None or pick.users == 1


def test_slo_source_is_said(write_suite: Callable[[str], Path]) -> None:
    with_slo = load_suite(FIXTURES / "capacity.yaml", quantization_catalog())
    assert slo_of(with_slo) == (with_slo.slo, SLO_FROM_SUITE)
    without = load_suite(
        write_suite((FIXTURES / "capacity.yaml").read_text().replace("slo: {", "#")), quantization_catalog()
    )
    assert slo_of(without) == (default_slo(), SLO_DEFAULT) and slo_of(None) == (default_slo(), SLO_NO_SUITE)
    assert default_slo().limits() == (2000, 10)  # MLPerf llama3.1-8b server: 2 s TTFT, 100 ms per token


def setup_rows(figures: dict[int, tuple[float, float]], **columns: Any) -> pd.DataFrame:
    """One setup at depth 0: {sequences: (TTFT ms, decode tok/s per user)}, as derive() leaves rows: every
    repetition's TTFT and every token's time the same, so each percentile is that figure."""
    rows = [
        {
            "host": "h",
            "device_id": "cpu",
            "device": "h / cpu",
            "device_kind": "cpu",
            "backend": "llamacpp",
            "model_id": "m",
            "quantization": "Q4_0",
            "prompt_tokens": 512,
            "gen_tokens": 128,
            "depth": 0,
            "parallel": n,
            "status": "ok",
            "reason": "",
            "ttft_ms_mean": ttft,
            "ttft_ms_samples": "" if ttft != ttft else f"{ttft};{ttft};{ttft}",  # NaN: not measured
            "itl_ms_p99": 1000 / user,
            "decode_tok_s_mean": user * n,
            "decode_tok_s_per_seq_mean": user,
            "avg_power_w": None,
            "system_warnings": "",
            **columns,
        }
        for n, (ttft, user) in figures.items()
    ]
    return normalize(pd.DataFrame(rows))


def capacity_of(figures: dict[int, tuple[float, float]], **columns: Any) -> pd.Series:
    table = capacity_table(setup_rows(figures, **columns), None, SLO, keep_all=False)
    assert len(table) == 1
    return table.iloc[0]


def test_none_meets_the_slo() -> None:
    result = capacity_of({1: (2500, 30), 4: (4000, 20)})
    assert result["capacity"] == 0 and not result["all_meet"]
    assert result["limit"] == "not even 1 user: TTFT p99 2,500 ms > 2,000 ms"
    assert pd.isna(result["decode_at_capacity"]) and pd.isna(result["usd_per_mtok_at_capacity"])
    fewest = capacity_of({4: (1000, 8), 16: (1500, 5)})
    assert fewest["limit"] == (
        "not even 4 users (the fewest measured): time per token p99 125.0 ms > 100.0 ms (8.0 tok/s per user < 10)"
    )


def test_all_measured_meet_it() -> None:
    result = capacity_of({1: (100, 50), 4: (400, 40), 16: (1600, 20)})
    assert result["capacity"] == 16 and result["all_meet"]
    assert result["limit"] == "every measured N meets it — capacity ≥ 16 (a larger N was not measured)"
    assert result["decode_at_capacity"] == pytest.approx(320) and result["user_tok_s_at_capacity"] == 20


def test_a_failure_below_a_pass_caps_the_capacity() -> None:
    """4 users fail and 16 pass (a noisy measurement): the capacity is 1, the largest N with every smaller
    measured N meeting the SLO, and the limit names the 4."""
    result = capacity_of({1: (100, 50), 4: (400, 9), 16: (1600, 12)})
    assert result["capacity"] == 1 and not result["all_meet"]
    assert result["limit"] == "time per token p99 111.1 ms > 100.0 ms (9.0 tok/s per user < 10) at 4 users"


def test_both_limits_named_and_a_missing_figure_fails() -> None:
    assert capacity_of({1: (100, 50), 4: (2100, 9)})["limit"] == (
        "TTFT p99 2,100 ms > 2,000 ms and time per token p99 111.1 ms > 100.0 ms (9.0 tok/s per user < 10) at 4 users"
    )
    assert capacity_of({1: (float("nan"), 50)})["limit"] == (
        "not even 1 user: TTFT p99 unknown (no per-repetition TTFT samples)"
    )


def test_the_slo_is_judged_on_its_percentile_not_the_mean() -> None:
    """16 users: TTFT samples 1,500, 1,600 and 2,600 ms. Their mean (1,900) meets 2,000 ms, their p99 (2,580)
    does not: the capacity is 4, not 16; and a row that has only means is not taken as meeting it."""
    rows = setup_rows({1: (100, 50), 4: (400, 40), 16: (1900, 20)})
    rows.loc[rows["parallel"] == 16, "ttft_ms_samples"] = "1500;1600;2600"
    result = capacity_table(rows, None, SLO, keep_all=False).iloc[0]
    assert result["capacity"] == 4
    assert result["limit"] == "TTFT p99 2,580 ms > 2,000 ms at 16 users"
    only_means = setup_rows({1: (100, 50)}).assign(ttft_ms_samples="", itl_ms_p99=np.nan)
    unknown = capacity_table(only_means, None, SLO, keep_all=False).iloc[0]
    assert unknown["capacity"] == 0 and "TTFT p99 unknown" in unknown["limit"]
    assert "time per token p99 unknown (no per-user samples, no tpot_ms_p99 or itl_ms_p99)" in unknown["limit"]


def test_each_users_samples_decide_not_the_repetitions_or_the_steps() -> None:
    """16 users in 3 repetitions: 48 per-user figures. Every decode step took 50 ms (20 tok/s per user, step p99
    met), but the users whose prompts were done first waited for the rest of the prefill before their second
    token: their time per output token (MLPerf's per-request TPOT) is 160 ms, and the p99 over the 48 is what is
    judged. Their TTFTs, all under the whole prefill's 2,100 ms, decide TTFT: 16 users meet 2,000 ms at p99."""
    rows = setup_rows({1: (100, 50), 4: (400, 40), 16: (2100, 20)})
    ttft = ";".join(["1200"] * 46 + ["1900", "1950"])
    tpot = ";".join(["50"] * 40 + ["160"] * 8)
    at_16 = rows["parallel"] == 16
    rows.loc[at_16, "ttft_ms_per_seq_samples"] = ttft
    rows.loc[at_16, "tpot_ms_per_seq_samples"] = tpot
    result = capacity_table(rows, None, SLO, keep_all=False).iloc[0]
    assert result["capacity"] == 4
    assert result["limit"] == "time per token p99 160.0 ms > 100.0 ms (6.2 tok/s per user < 10) at 16 users"
    rows.loc[at_16, "tpot_ms_per_seq_samples"] = ";".join(["50"] * 48)
    result = capacity_table(rows, None, SLO, keep_all=False).iloc[0]
    # numpy's linear percentile: rank 0.99 × 47 = 46.53, between the 1,900 and the 1,950
    assert result["capacity"] == 16 and result["ttft_pct_at_capacity"] == pytest.approx(1900 + 0.53 * 50)


def test_a_larger_n_that_failed_or_did_not_fit_breaks_the_capacity_with_its_reason() -> None:
    measured = setup_rows({1: (100, 50), 4: (400, 40)})
    failed = setup_rows({16: (float("nan"), float("nan"))}).assign(
        status="failed", reason="worker died (SIGKILL: out of memory)"
    )
    rows = pd.concat([measured, failed], ignore_index=True)
    result = capacity_table(measured, None, SLO, keep_all=False, others=rows).iloc[0]
    assert result["capacity"] == 4 and not result["all_meet"]
    assert result["limit"] == "failed: worker died (SIGKILL: out of memory) at 16 users"
    assert result["measured_n"] == "1, 4, 16"


def test_fixture_capacity_breaks_at_the_skipped_64() -> None:
    analysis = load_report_data([FIXTURES / "capacity.csv"], suite_path=FIXTURES / "capacity.yaml")
    table = _by_device_depth(analysis)
    assert table.loc[("gpu-a", 0), "capacity"] == 16 and not table.loc[("gpu-a", 0), "all_meet"]
    assert (
        table.loc[("gpu-a", 0), "limit"].startswith("skipped: does not fit")
        and "at 64 users" in table.loc[("gpu-a", 0), "limit"]
    )


def test_rows_without_the_per_user_column_use_aggregate_over_sequences() -> None:
    rows = setup_rows({1: (100, 50), 4: (400, 11)}).drop(columns="decode_tok_s_per_seq_mean")
    result = capacity_table(rows, None, SLO, keep_all=False).iloc[0]
    assert result["capacity"] == 4 and result["user_tok_s_at_capacity"] == pytest.approx(11)


def test_noise_marks_only_the_rows_that_decide() -> None:
    figures = {1: (100, 50), 4: (400, 9), 16: (1600, 12)}
    deciding = setup_rows(figures).assign(system_warnings=["", "CPU governor is powersave", ""])
    beyond = setup_rows(figures).assign(system_warnings=["", "", "CPU governor is powersave"])
    assert capacity_table(deciding, None, SLO, keep_all=False).iloc[0]["noisy"]
    assert not capacity_table(beyond, None, SLO, keep_all=False).iloc[0]["noisy"]


def test_keep_all_uses_the_newest_row_of_each_cell() -> None:
    older = setup_rows({1: (100, 50), 4: (400, 9)}, finished_utc="2026-01-01T00:00:00Z")
    newer = setup_rows({4: (400, 20)}, finished_utc="2026-01-02T00:00:00Z")
    both = pd.concat([newer, older], ignore_index=True)  # the newer file read first
    assert capacity_table(both, None, SLO, keep_all=True).iloc[0]["capacity"] == 4


def test_time_to_answer_marks_extrapolation_and_a_single_depth() -> None:
    rows = pd.concat(
        [
            setup_rows({1: (100, 100)}, depth=0),
            setup_rows({1: (100, 50)}, depth=8192),
            setup_rows({1: (100, 20)}, depth=0, device_id="gpu", device="h / gpu"),
            setup_rows({4: (100, 20)}, depth=0, device_id="gpu", device="h / gpu"),  # not one user: not used
        ],
        ignore_index=True,
    )
    table = answer_times(rows, [4096, 16384], keep_all=False).set_index("device_id")
    two, one = table.loc["cpu"], table.loc["gpu"]
    assert two["seconds_4096"] == pytest.approx(time_to_generate([0, 8192], [100, 50], 512, 4096)[0])
    assert two["beyond_4096"] == 0 and two["beyond_16384"] == 512 + 16384 - 8192 and two["depth_count"] == 2
    assert one["depth_count"] == 1 and one["seconds_4096"] == pytest.approx(4096 / 20)
    assert thinking_budgets(None) == [4096, 16384]


def test_time_to_answer_places_each_speed_at_the_context_its_decode_started() -> None:
    """A row that decoded after its prompt (decode_context_tokens = depth + prompt) is placed there; an older
    row without the column decoded at its depth."""
    new = pd.concat(
        [
            setup_rows({1: (100, 100)}, depth=0, decode_context_tokens=512),
            setup_rows({1: (100, 50)}, depth=8192, decode_context_tokens=8192 + 512),
        ],
        ignore_index=True,
    )
    row = answer_times(new, [4096], keep_all=False).iloc[0]
    assert row["depths"] == "512, 8,704" and not row["starts_below"]
    assert row["seconds_4096"] == pytest.approx(time_to_generate([512, 8704], [100, 50], 512, 4096)[0])
    old = new.drop(columns="decode_context_tokens")
    assert answer_times(old, [4096], keep_all=False).iloc[0]["depths"] == "0, 8,192"


def test_html_report_has_both_sections(tmp_path: Path) -> None:
    out = write_report(
        [FIXTURES / "capacity.csv"], tmp_path / "r.html", fmt="html", suite_path=FIXTURES / "capacity.yaml"
    )
    text = out.read_text(encoding="utf-8")
    assert '<h2 id="capacity">Capacity</h2>' in text and '<h2 id="time-to-answer">Time to answer</h2>' in text
    assert '<td class="num">16</td>' in text and "1 ⚑" in text and "Burst capacity" in text


def test_method_explains_capacity_and_time_to_answer(analysis: Analysis) -> None:
    text = render_markdown(method.build(analysis), "plots")
    assert "Capacity (burst): a setup" in text and "it and every smaller measured N meet the SLO" in text
    assert "Time to answer: the seconds to generate" in text


def test_figures_at_capacity_come_from_that_row_alone() -> None:
    """With a TTFT-only SLO a row without decode figures can be the capacity: its decode stays unknown rather
    than borrowed from a smaller N."""
    rows = setup_rows({1: (100, 50), 4: (400, float("nan"))})
    result = capacity_table(rows, None, Slo(max_ttft_ms=2000), keep_all=False).iloc[0]
    assert result["capacity"] == 4 and pd.isna(result["decode_at_capacity"])

"""The report's Served capacity section: goodput arithmetic, the largest sustainable rate, users and the
curves, from load-point rows built on a fixture row (the server backend's `load` knob)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from bench.report.analysis import Analysis
from bench.report.build import load_report_data
from bench.report.markdown import render_markdown
from bench.report.sections import recommendations, served
from bench.report.served import goodput_rps
from bench.report.served_plots import served_figure
from bench.suite import Slo

FIXTURES = Path(__file__).parent / "fixtures" / "report"
SLO = Slo(max_ttft_ms=2000, min_user_tok_s=10)  # TPOT <= 100 ms

# (load, offered rate, measured throughput, p99 TTFT ms, p99 TPOT ms): the 3/s point breaks TTFT, and the 4/s point
# meets it again (a lucky draw) but does not count: a lower rate failed
POINTS = [
    ("sweep:5/1", None, 0.5, 150.0, 20.0),
    ("poisson:1", 1.0, 1.0, 200.0, 25.0),
    ("poisson:2", 2.0, 1.9, 400.0, 40.0),
    ("poisson:3", 3.0, 2.2, 5000.0, 90.0),
    ("poisson:4", 4.0, 2.3, 1500.0, 95.0),
]


def _rows(tmp_path: Path) -> Path:
    template = pd.read_csv(FIXTURES / "capacity.csv", dtype=str, keep_default_na=False)
    template = template[(template["status"] == "ok") & (template["depth"] == "0")].iloc[[0]]
    rows = []
    for load, rate, throughput, ttft, tpot in POINTS:
        row = template.copy()
        row["backend"], row["parallel"] = "server", "1"
        row["load"], row["load_rate_rps"] = load, "" if rate is None else str(rate)
        row["request_throughput_rps"], row["decode_tok_s_mean"] = str(throughput), str(throughput * 100)
        row["ttft_ms_p99"], row["tpot_ms_p99"], row["e2e_ms_mean"] = str(ttft), str(tpot), "3000"
        row["request_errors"], row["requests_incomplete"], row["client_limited"] = "0", "0", "False"
        row["ttft_ms_samples"], row["tpot_ms_samples"], row["load_span_s"] = "100;300;2500", "10;nan;150", "2"
        rows.append(row)
    path = tmp_path / "served.csv"
    pd.concat(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def analysis(tmp_path: Path) -> Analysis:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"
        "slo: {max_ttft_ms: 2000, min_user_tok_s: 10}\n"
    )
    return load_report_data([_rows(tmp_path)], suite_path=suite)


def test_goodput_counts_requests_meeting_every_limit() -> None:
    # 100 ms / 10 ms meets; 300 ms with no time per token (one token) meets; 2,500 ms breaks TTFT: 2 over 2 s
    assert goodput_rps("100;300;2500", "10;nan;150", 2.0, SLO) == pytest.approx(1.0)
    assert goodput_rps("100;300", "10;150", 4.0, SLO) == pytest.approx(0.25)  # 150 ms per token breaks TPOT
    assert math.isnan(goodput_rps("100;300", "10", 2.0, SLO))  # not aligned: no verdict
    assert math.isnan(goodput_rps("100", "10", 0.0, SLO))


def test_largest_sustainable_rate_users_and_section(analysis: Analysis) -> None:
    points = analysis.served_points
    assert points["arrival_rps"].tolist() == [0.5, 1.0, 2.0, 3.0, 4.0]  # the synchronous point at its throughput
    assert points["meets_slo"].tolist() == [True, True, True, False, True]
    (setup,) = analysis.served.to_dict("records")
    assert setup["rate_rps"] == 2.0 and setup["points"] == 5  # 4/s met, but 3/s below it did not
    assert setup["users"] == pytest.approx(2.0 * 3.0) and setup["goodput_rps"] == pytest.approx(1.0)
    assert setup["output_tok_s"] == pytest.approx(190.0)
    assert analysis.capacity.table.empty or "server" not in set(analysis.capacity.table["backend"])
    text = render_markdown(served.build(analysis), "plots")
    assert "## Served capacity" in text and "| 2.00 |" in text and "served-capacity.png" in text
    advice = render_markdown(recommendations.build(analysis), "plots")
    assert "Most requests/s at the SLO" in advice and "2.00 requests/s sustained" in advice


def test_a_rows_own_goodput_is_read_and_older_rows_computed(tmp_path: Path) -> None:
    """A row measured with goodput_rps (under its own slo_* limits) keeps it; a row from before has it computed
    from its samples under the suite's slo (1.0/s here: 2 of 3 requests over 2 s)."""
    path = _rows(tmp_path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame["goodput_rps"] = ["", "", "0.75", "", ""]  # the 2/s point's own figure; the others are older rows
    frame.to_csv(path, index=False)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"
        "slo: {max_ttft_ms: 2000, min_user_tok_s: 10}\n"
    )
    points = load_report_data([path], suite_path=suite).served_points
    assert points["goodput_rps"].tolist() == pytest.approx([1.0, 1.0, 0.75, 1.0, 1.0])


def test_curves_are_drawn_against_the_arrival_rate(analysis: Analysis) -> None:
    figure = served_figure(analysis.served_points, SLO)
    assert figure is not None
    ttft, tpot, throughput = figure.axes
    assert [len(a.lines) for a in (ttft, tpot, throughput)] == [2, 2, 1]  # the setup, and the SLO's limit
    assert list(ttft.lines[0].get_xdata()) == [0.5, 1.0, 2.0, 3.0, 4.0]
    assert list(ttft.lines[0].get_ydata()) == [150.0, 200.0, 400.0, 5000.0, 1500.0]
    assert list(ttft.lines[1].get_ydata()) == [2000.0, 2000.0] and list(tpot.lines[1].get_ydata()) == [100.0, 100.0]
    assert list(throughput.lines[0].get_ydata()) == pytest.approx([50.0, 100.0, 190.0, 220.0, 230.0])


def test_no_load_points_no_section() -> None:
    analysis = load_report_data([FIXTURES / "capacity.csv"], suite_path=FIXTURES / "capacity.yaml")
    text = render_markdown(served.build(analysis), "plots")
    assert "No load profile was measured" in text and analysis.served.empty
    assert "Most requests/s" not in render_markdown(recommendations.build(analysis), "plots")


def test_compare_gates_and_export_carries_served_figures(tmp_path: Path) -> None:
    from bench.compare.export import github_action_benchmark_json, measured_rows
    from bench.compare.model import CompareOptions
    from bench.compare.verdict import compare_results

    (tmp_path / "base").mkdir()
    (tmp_path / "cur").mkdir()
    base = _rows(tmp_path / "base")
    frame = pd.read_csv(base, dtype=str, keep_default_na=False)
    frame.loc[frame["load"] == "poisson:2", "ttft_ms_p99"] = "800"  # the 2/s point's tail doubled
    current = tmp_path / "cur" / "served.csv"
    frame.to_csv(current, index=False)
    comparison = compare_results([base], [current], CompareOptions())
    worse = [m for c in comparison.cells for m in c.changes if m.metric == "ttft_ms_p99" and m.worse]
    assert len(worse) == 1 and worse[0].baseline == 400.0 and worse[0].current == 800.0
    assert worse[0].beyond_threshold
    entries = github_action_benchmark_json(measured_rows([base]), "bigger")
    assert sum("request_throughput_rps" in e["name"] for e in entries) == len(POINTS)


def test_a_setup_where_no_point_meets_the_slo_says_none(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\nslo: {max_ttft_ms: 100}\n"
    )
    analysis = load_report_data([_rows(tmp_path)], suite_path=suite)
    (setup,) = analysis.served.to_dict("records")
    assert math.isnan(setup["rate_rps"]) and math.isnan(setup["users"])
    assert "none met" in render_markdown(served.build(analysis), "plots")
    assert "Most requests/s at the SLO: none" in render_markdown(recommendations.build(analysis), "plots")


def test_cost_per_million_tokens_at_the_sustainable_rate(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: t\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"
        "devices: [{id: gpu-a, kind: cuda}]\nslo: {max_ttft_ms: 2000, min_user_tok_s: 10}\n"
        "costs: {gpu-a: {price_usd: 8766, amortization_years: 1, power_w: 0}}\n"  # $1 an hour
    )
    analysis = load_report_data([_rows(tmp_path)], suite_path=suite)
    (setup,) = analysis.served.to_dict("records")
    # $1/h over 190 output tok/s (the 2/s point) = 1 / (190 x 3600) x 1e6
    assert setup["usd_per_mtok"] == pytest.approx(1e6 / (190 * 3600))
    text = render_markdown(served.build(analysis), "plots")
    assert "per 1M tok)" in text and "1.462" in text

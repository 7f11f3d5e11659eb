"""The procurement report from fixture CSVs: golden files per section, merging, escaping, costs, choices.

Fixtures (tests/fixtures/report/, made by make_fixtures.py from two real quickstart runs):
host-a/host-b are the two runs as two machines; host-a-older is host-a a day earlier and slower;
ladder-quality adds a quantization ladder on a GPU machine with quality, energy and VRAM;
no-quality-columns is an older CSV layout; hostile has names built to break tables and HTML.
Regenerate the golden files after an intended change with BENCH_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report import format as fmt
from bench.report import write_report
from bench.report.build import SECTIONS as REPORT_SECTIONS
from bench.report.build import Analysis, load_report_data
from bench.report.document import Table
from bench.report.economics import HOURS_PER_YEAR
from bench.report.frontier import pareto_2d
from bench.report.markdown import escape_md, render_markdown
from bench.report.sections.fits import mark
from bench.suite.knobs import KNOBS

FIXTURES = Path(__file__).parent / "fixtures" / "report"
GOLDEN = FIXTURES / "golden"
SECTIONS = {section.__name__.rsplit(".", 1)[-1]: section for section in REPORT_SECTIONS}  # golden files by module
CASES = {
    "two-hosts": (["host-a-older.csv", "host-a.csv", "host-b.csv"], None),
    "ladder": (["ladder-quality.csv"], "procurement.yaml"),
    "no-quality": (["no-quality-columns.csv"], None),
    "hostile": (["hostile.csv"], None),
    "multi-user": (["capacity.csv"], "capacity.yaml"),  # parallel 1/4/16 through every section
}


def analysis_for(case: str, keep_all: bool = False) -> Analysis:
    files, suite = CASES[case]
    return load_report_data(
        [FIXTURES / f for f in files], keep_all=keep_all, suite_path=FIXTURES / suite if suite else None
    )


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    return {case: analysis_for(case) for case in CASES}


def section_markdown(analysis: Analysis, section: str) -> str:
    return render_markdown(SECTIONS[section].build(analysis), "plots")


@pytest.mark.parametrize("section", list(SECTIONS))
@pytest.mark.parametrize("case", list(CASES))
def test_section_matches_golden_file(analyses: dict[str, Analysis], case: str, section: str) -> None:
    text = section_markdown(analyses[case], section)
    golden = GOLDEN / case / f"{section}.md"
    if os.environ.get("BENCH_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; create it with BENCH_UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8"), f"{case}/{section} differs from {golden}"


def test_sections_are_stable_whatever_the_file_order(analyses: dict[str, Analysis]) -> None:
    shuffled = load_report_data([FIXTURES / "host-b.csv", FIXTURES / "host-a.csv", FIXTURES / "host-a-older.csv"])
    for section in SECTIONS:
        if section == "method":  # lists the input files in the order given
            continue
        assert section_markdown(shuffled, section) == section_markdown(analyses["two-hosts"], section), section


def test_two_quickstart_runs_fill_every_section(analyses: dict[str, Analysis], tmp_path: Path) -> None:
    """The acceptance report: two real runs labelled as two machines, every section with real content."""
    out = write_report([FIXTURES / "host-a.csv", FIXTURES / "host-b.csv"], tmp_path / "r.md")
    text = out.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == [section.TITLE for section in REPORT_SECTIONS]
    assert "| bench-a | AMD EPYC |" in text and "| bench-b | AMD EPYC |" in text
    assert "### bench-a / cpu (AMD EPYC)" in text and "### bench-b / cpu (AMD EPYC)" in text
    assert "decode @0 (tok/s)" in text and "decode @512 (tok/s)" in text
    assert "Decode efficiency (memory-bandwidth roofline)" in text  # the bandwidth probe's column
    assert re.search(r"\| bench-[ab] / cpu \| t[12] \| [\d.]+ \| 1\.00 \|", text)  # devices side by side
    assert "Best overall: **smollm2-135m Q4_1 t" in text
    assert "Quality was not measured" in text
    for plot in ("decode-by-device.png", "pareto-speed-memory.png"):
        assert f"](r-plots/{plot})" in text
        assert (tmp_path / "r-plots" / plot).read_bytes().startswith(b"\x89PNG")


def test_newest_result_per_cell_and_host_wins(analyses: dict[str, Analysis]) -> None:
    older = pd.read_csv(FIXTURES / "host-a-older.csv")
    newer = pd.read_csv(FIXTURES / "host-a.csv")
    merged = analyses["two-hosts"].data.rows
    host_a = merged[merged["host"] == "bench-a"].set_index("cell_id")
    assert len(merged) == 8 and len(host_a) == 4  # 4 cells x 2 hosts; the older night dropped
    expected = newer.set_index("cell_id")["decode_tok_s_mean"]
    assert host_a["decode_tok_s_mean"].to_dict() == pytest.approx(expected.to_dict())
    assert not np.isclose(host_a["decode_tok_s_mean"], older.set_index("cell_id")["decode_tok_s_mean"]).any()


def test_keep_all_keeps_every_night() -> None:
    analysis = analysis_for("two-hosts", keep_all=True)
    assert len(analysis.data.rows) == 12
    text = section_markdown(analysis, "devices")
    assert "| finished (UTC) |" in text and "2026-11-28T" in text and "2026-11-29T" in text
    assert "(2026-11-28T" in section_markdown(analysis, "pareto")  # each night is its own configuration
    assert "every row of every file is kept" in section_markdown(analysis, "method")


def test_csv_without_quality_columns_says_quality_was_not_measured(analyses: dict[str, Analysis]) -> None:
    analysis = analyses["no-quality"]
    assert "kld_mean" not in pd.read_csv(FIXTURES / "no-quality-columns.csv").columns
    assert analysis.data.quality_metric is None
    assert "Quality was not measured" in section_markdown(analysis, "summary")
    assert "Quality was not measured" in section_markdown(analysis, "devices")
    assert "memory bandwidth unknown" in section_markdown(analysis, "devices")  # no probe column either


def _cells(line: str) -> list[str]:
    """Split a markdown table line on unescaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_hostile_names_cannot_break_tables_or_inject(analyses: dict[str, Analysis], tmp_path: Path) -> None:
    out = write_report([FIXTURES / "hostile.csv"], tmp_path / "r.md")
    text = out.read_text()
    assert "<script" not in text and "<b>" not in text
    hostile = "evil\\|model name &lt;script>alert(1)&lt;/script> \\$x^2\\$ \\*bold\\* \\[link\\](http://x)"
    assert hostile in text
    tables: list[list[str]] = [[]]
    for line in text.splitlines():  # consecutive lines starting with '|' form one table
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    tables = [table for table in tables if table]
    assert len(tables) >= 8
    for table in tables:
        widths = {len(_cells(line)) for line in table}
        assert len(widths) == 1, table[0]


def test_escape_md() -> None:
    assert escape_md("a|b\nc") == "a\\|b c"
    assert escape_md("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)>"
    assert escape_md("</b> <!-- <?x <http://x> 1 < 2") == "&lt;/b> &lt;!-- &lt;?x &lt;http://x> 1 < 2"
    assert escape_md("Q4_K_M") == "Q4_K_M"  # an underscore inside a word means nothing to GFM
    assert escape_md("_x_ *y* `z` [l] ~s~ $m$") == "\\_x\\_ \\*y\\* \\`z\\` \\[l\\] \\~s\\~ \\$m\\$"
    assert escape_md(float("nan")) == "" and escape_md(None) == ""


def test_cost_per_million_tokens_follows_the_documented_formula(analyses: dict[str, Analysis]) -> None:
    configs = analyses["ladder"].data.configs.set_index(["device", "quantization"])
    cpu = configs.loc[("bench-a / cpu", "Q4_K_M")]
    hourly = 1200 / (4 * HOURS_PER_YEAR * 1.0) + 95 / 1000 * 0.30
    busy_s = 512 / cpu["prefill_tok_s_mean"] + 128 / cpu["decode_tok_s_mean"]  # the prompt is device time too
    assert cpu["usd_per_mtok"] == pytest.approx(hourly / (128 / busy_s * 3600) * 1e6)
    gpu = configs.loc[("gpu-box / gpu0", "Q4_K_M")]  # priced by HOST/DEVICE, half utilized
    hourly = 2400 / (3 * HOURS_PER_YEAR * 0.5) + 520 / 1000 * 0.30
    busy_s = 512 / gpu["prefill_tok_s_mean"] + 128 / 700
    assert gpu["usd_per_mtok"] == pytest.approx(hourly / (128 / busy_s * 3600) * 1e6)
    assert gpu["tok_per_j"] == pytest.approx(700 / 180, rel=1e-4)  # measured energy, not the declared power
    assert cpu["tok_per_j"] == pytest.approx(cpu["decode_tok_s_mean"] / 95) and cpu["tok_per_j_estimated"]


def test_recommendation_names_the_constraint_that_rules_each_option_out(write_suite) -> None:  # noqa: ANN001
    suite = write_suite(
        (FIXTURES / "procurement.yaml")
        .read_text()
        .replace("  min_context: 4096\n", "")
        .replace("max_memory_gb: 0.5", "max_memory_gb: 0.25")
        .replace("min_decode_tok_s: 50", "min_decode_tok_s: 100")
    )
    analysis = load_report_data([FIXTURES / "ladder-quality.csv"], suite_path=suite)
    table = analysis.recommendation.table.set_index(["device", "quantization"])
    best = analysis.recommendation.best
    assert (best["device"], best["quantization"]) == (
        "gpu-box / gpu0",
        "Q4_K_M",
    )  # cheapest per token that passes
    assert table.loc[("gpu-box / gpu0", "Q2_K"), "reasons"] == "KLD 0.3480 > 0.05 allowed"
    assert table.loc[("gpu-box / gpu0", "F16"), "reasons"] == "memory 0.34 GB > 0.25 allowed"  # 0.32 GiB
    assert table.loc[("bench-a / cpu", "Q4_K_M"), "reasons"].startswith("decode 28.0 tok/s per user at depth 512 < 100")
    text = section_markdown(analysis, "recommendations")
    assert "Best overall: **smollm2-135m Q4_K_M nglall on gpu-box / gpu0**" in text
    assert "ruled out: decode 28.0 tok/s per user at depth 512 < 100 required" in text  # '<' escaped only before a tag


def test_without_a_suite_no_constraints_are_declared_and_speed_ranks(analyses: dict[str, Analysis]) -> None:
    text = section_markdown(analyses["two-hosts"], "recommendations")
    assert "No constraints were declared (no suite given" in text
    assert "ranked by highest decode tok/s" in text
    table = analyses["two-hosts"].recommendation.table
    fastest = table.loc[table["decode_tok_s_mean"].idxmax()]
    assert fastest["rank"] == 1


def test_pareto_front_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        count = int(rng.integers(1, 25))
        x = rng.integers(0, 6, count).astype(float)
        y = rng.integers(0, 6, count).astype(float)
        x[rng.random(count) < 0.1] = np.nan
        on_front, dominator = pareto_2d(x, y)
        for i in range(count):
            beaten_by = [
                j
                for j in range(count)
                if not np.isnan(x[j] + y[j]) and x[j] >= x[i] and y[j] <= y[i] and (x[j] > x[i] or y[j] < y[i])
            ]
            if np.isnan(x[i] + y[i]):
                assert not on_front[i] and dominator[i] == -1
                continue
            assert on_front[i] == (not beaten_by)
            if beaten_by:
                assert dominator[i] in beaten_by and on_front[dominator[i]]


def test_pareto_names_the_dominating_configuration(analyses: dict[str, Analysis]) -> None:
    text = section_markdown(analyses["ladder"], "pareto")
    row = next(line for line in text.splitlines() if "| bench-a / cpu | smollm2-135m Q2_K |" in line)
    assert "dominated by smollm2-135m Q2_K nglall on gpu-box / gpu0" in row  # as good in quality, faster
    assert "| **smollm2-135m Q4_K_M nglall** |" in text  # on the front: bold


def test_context_marks() -> None:
    largest = pd.Series([2048.0, 40960.0, 200000.0, np.nan])
    trained = pd.Series([8192.0, 8192.0, np.nan, 8192.0])
    assert mark(largest, trained, 4096).tolist() == ["no", "yes", "yes", "–"]
    assert mark(largest, trained, 32768).tolist() == ["no", "memory only", "yes", "–"]


def test_unknown_format_and_bad_inputs_are_bench_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="report format 'pdf'"):
        write_report([FIXTURES / "host-a.csv"], tmp_path / "r.pdf", fmt="pdf")
    with pytest.raises(BenchError, match="results file not found"):
        write_report([tmp_path / "missing.csv"], tmp_path / "r.md")
    with pytest.raises(BenchError, match="suite file not found"):
        write_report([FIXTURES / "host-a.csv"], tmp_path / "r.md", suite_path=tmp_path / "missing.yaml")


def test_all_failed_results_still_make_a_report(tmp_path: Path) -> None:
    frame = pd.read_csv(FIXTURES / "host-a.csv", dtype=str, keep_default_na=False)
    frame["status"], frame["reason"] = "failed", "worker died: signal 11 (SIGSEGV)"
    path = tmp_path / "failed.csv"
    frame.to_csv(path, index=False)
    text = write_report([path], tmp_path / "r.md").read_text()
    assert "No cell was measured successfully" in text
    assert text.count("worker died: signal 11 (SIGSEGV)") == 4


def test_stale_plots_are_removed(tmp_path: Path) -> None:
    plots = tmp_path / "r-plots"
    plots.mkdir()
    (plots / "pareto-quality-speed.png").write_bytes(b"old")
    write_report([FIXTURES / "host-a.csv"], tmp_path / "r.md")
    assert sorted(p.name for p in plots.iterdir()) == ["decode-by-device.png", "pareto-speed-memory.png"]


# Counts and ratios without a unit: ranks, row counts, layers, integer knob values, perplexity, KL divergence.
UNITLESS = {"rank", "rows", "layers", "PPL", "KLD"} | {knob.label for knob in KNOBS.values() if knob.type is int}


def test_tables_have_units_in_numeric_headers(analyses: dict[str, Analysis]) -> None:
    for case, analysis in analyses.items():
        for section in SECTIONS.values():
            for block in section.build(analysis):
                if isinstance(block, Table):
                    for header, numeric in zip(block.headers, block.numeric, strict=True):
                        if numeric and header not in UNITLESS and not header.startswith("KLD vs "):
                            assert "(" in header, f"{case}: numeric column {header!r} has no unit"


def test_what_fits_asks_the_planner_once_per_memory_setup(analyses: dict[str, Analysis]) -> None:
    """Against an independent figure: free memory over the KV bytes llama.cpp itself reported per position.

    The quickstart rows carry no planner estimate, so the planner works from the model's shape; llama.cpp's
    own KV buffer (kv_cache_bytes over n_ctx, from its load log) is the reference for what a position costs,
    plus the flash-attention mask (f16, n_ubatch wide). Fixed overheads (runtime, worker) are < 1 % here.
    """
    configs = analyses["two-hosts"].data.configs
    assert len(configs) == 4 and configs["context_basis"].eq("estimated").all()
    kv_per_position = fmt.as_float(configs["kv_cache_bytes"]) / fmt.as_float(configs["n_ctx"])
    mask_per_position = 2 * fmt.as_float(configs["n_ubatch"])
    free = fmt.as_float(configs["ram_total_bytes"]) - fmt.as_float(configs["model_file_bytes"])
    expected = free / (kv_per_position + mask_per_position)
    assert configs["max_context"].to_numpy() == pytest.approx(expected.to_numpy(), rel=0.01)
    assert (configs["max_context"] % 256 == 0).all()
    assert configs["usable_context"].eq(8192).all()  # SmolLM2 was trained for 8K: memory is not the limit
    text = section_markdown(analyses["two-hosts"], "fits")
    tokens = int(configs["max_context"].iloc[0])
    assert f"| 8,192 | 8,192 | {tokens:,} | estimated | yes | memory only | memory only |" in text


@pytest.mark.parametrize("case", list(CASES))
def test_report_prints_no_pandas_fragmentation_warning(case: str) -> None:
    """A user's terminal shows no PerformanceWarning: wide frames get their columns in one concat."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        analysis = analysis_for(case)
        for section in SECTIONS.values():
            section.build(analysis)

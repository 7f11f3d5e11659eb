"""The sustained mode on a real model: SmolLM2 on 2 threads for 20 s (the README's 60 s run was made by hand
with --sustain 60), through `bench run --sustain` and its report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.lines import Line2D

from bench.report.analysis import load_report_data
from bench.report.plots import sustained_figure
from bench.report.sustained import sustained_rows
from bench.results import read_results, samples_from_text
from tests.conftest import quick_suite_yaml
from tests.test_report_run import bench

SUSTAIN_S = 20
WINDOW_S = 5


def test_a_real_sustained_run_records_windows_and_renders(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    suite = write_suite(
        quick_suite_yaml(
            name="sustained",
            workload=(
                "workload: {prompt_tokens: [32], gen_tokens: 32, depths: [0], repetitions: 1, warmup: 0, "
                f"sustain_window_s: {WINDOW_S}}}"
            ),
            knobs="knobs: {threads: [2]}",
            # Room for a shared, busy machine: the mode is bounded by 2 x sustain_s + 30 s of wall time.
            limits="limits: {cell_timeout_s: 400, load_timeout_s: 120}",
        )
    )
    csv_path, report = tmp_path / "out.csv", tmp_path / "r.md"
    done = bench(
        "run", str(suite), "-o", str(csv_path), "--quiet", "--sustain", str(SUSTAIN_S), "--report", str(report)
    )
    assert done.returncode == 0, done.stderr
    row = read_results([csv_path]).iloc[0]
    assert row["status"] == "ok" and float(row["sustain_s"]) == SUSTAIN_S
    windows = samples_from_text(row["sustain_tok_s_samples"])
    ends = samples_from_text(row["sustain_t_s_samples"])
    assert len(windows) == len(ends) == SUSTAIN_S // WINDOW_S and all(w > 0 for w in windows)
    assert ends[-1] >= SUSTAIN_S - 1e-6 and ends == sorted(ends)
    assert float(row["sustain_burst_tok_s"]) == windows[0]
    assert float(row["sustain_ratio"]) == pytest.approx(float(row["sustain_tok_s"]) / windows[0], rel=1e-6)
    # The ratio is printed with the run's results.
    printed = re.search(r"ratio (\d\.\d{3})", done.stderr)  # the console writes to stderr
    assert printed and float(printed.group(1)) == round(float(row["sustain_ratio"]), 3), done.stderr
    # This VM has no sensors: each absent one says why, and the windows are recorded all the same.
    for sensor in ("power", "CPU frequency", "CPU temperature"):
        assert f"{sensor}: not available: " in row["sustain_sensors"]
    assert str(row["energy_source"]).startswith("not available: ")

    text = report.read_text()
    assert "### Sustained" in text and "](r-plots/sustained.png)" in text
    assert (tmp_path / "r-plots" / "sustained.png").read_bytes().startswith(b"\x89PNG")
    rows = sustained_rows(load_report_data([csv_path]).data.measured)
    figure = sustained_figure(rows)
    assert figure is not None
    speed_axes = figure.axes[0]
    (line,) = [a for a in speed_axes.get_children() if isinstance(a, Line2D) and a.get_label() != "_nolegend_"][:1]
    assert list(line.get_xdata()) == ends and list(line.get_ydata()) == windows
    assert figure.axes[1].get_ylabel() == "no temperature sensor"

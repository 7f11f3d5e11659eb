"""The report's "Sustained speed and energy" section from rows with hand-set sustained and energy columns: the
table's figures, J and $ per answer, and the plot's artists (speed and temperature lines per device)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.lines import Line2D

from bench.report.analysis import load_report_data
from bench.report.economics import HOURS_PER_YEAR
from bench.report.markdown import render_markdown
from bench.report.plots import sustained_figure
from bench.report.sections import sustained
from bench.report.sustained import per_answer, sustained_rows

FIXTURES = Path(__file__).parent / "fixtures" / "report"


@pytest.fixture(scope="module")
def rows_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """host-a's four real rows; the threads-2 depth-0 row ran 60 s sustained and throttled; every row has RAPL
    energy with idle taken out."""
    frame = pd.read_csv(FIXTURES / "host-a.csv", dtype=str, keep_default_na=False)
    frame["energy_source"] = "rapl_package"
    frame["energy_j_per_decode_token"] = "0.5"
    frame["energy_net_j_per_decode_token"] = "0.3"
    frame["idle_power_w"] = "10"
    frame["avg_power_w"] = "25"
    sustained_row = (frame["threads"] == "2") & (frame["depth"] == "0")
    values = {
        "sustain_s": "60",
        "sustain_burst_tok_s": "100",
        "sustain_tok_s": "80",
        "sustain_ratio": "0.8",
        "sustain_throttle_s": "30",
        "sustain_throttle_reasons": "CPU thermal throttle",
        "sustain_t_s_samples": "10;20;30;40;50;60",
        "sustain_tok_s_samples": "100;99;80;80;81;80",
        "sustain_temp_c_samples": "60;70;90;91;nan;92",
        "sustain_sensors": "fan: not available: no hwmon fan*_input under /sys/class/hwmon",
        "system_warnings": "cpu_load",  # measured on a busy machine: the ratio is marked
        "background_cpu_pct": "48",
    }
    for column, value in values.items():
        frame[column] = ""
        frame.loc[sustained_row, column] = value
    path = tmp_path_factory.mktemp("sustained") / "rows.csv"
    frame.to_csv(path, index=False)
    return path


def test_section_tables_burst_sustained_and_energy_per_answer(rows_csv: Path) -> None:
    analysis = load_report_data([rows_csv], suite_path=FIXTURES / "capacity.yaml")
    text = render_markdown(sustained.build(analysis), "plots")
    assert text.startswith(f"## {sustained.TITLE}")
    assert (
        "| t2 | 0 | 60 | 100.0 | 80.0 | 0.800 ⚑ 48% busy | after 30 s | CPU thermal throttle | fan: not available: "
        in text
    )
    assert "](plots/sustained.png)" in text
    # 4K answer = 4,096 tokens x 0.5 J gross, x 0.3 J net
    assert "| rapl_package | 25.0 | 10.0 | 0.5000 | 0.3000 | 2,048.0 | 1,228.8 |" in text


def test_cost_per_answer_is_the_hourly_cost_over_the_answers_device_time(rows_csv: Path) -> None:
    analysis = load_report_data([rows_csv], suite_path=FIXTURES / "capacity.yaml")
    rows = analysis.data.measured
    answers = per_answer(rows, [4096], analysis.data.suite)
    # capacity.yaml's cpu: $600 over 3 years at full use, 65 W at $0.30/kWh
    hourly = 600 / (3 * HOURS_PER_YEAR) + 65 / 1000 * 0.30
    decode = rows["decode_tok_s_mean"].astype(float)
    assert answers["usd_4096"].to_numpy() == pytest.approx((hourly * 4096 / decode / 3600).to_numpy())
    assert answers["j_4096"].tolist() == [2048.0] * 4


def test_plot_draws_speed_and_temperature_per_window(rows_csv: Path) -> None:
    rows = sustained_rows(load_report_data([rows_csv]).data.measured)
    assert len(rows) == 1
    figure = sustained_figure(rows)
    assert figure is not None
    speed_axes, temperature_axes = figure.axes
    speed = [line for line in speed_axes.get_lines() if isinstance(line, Line2D)]
    assert len(speed) == 1
    assert list(speed[0].get_xdata()) == [10, 20, 30, 40, 50, 60]
    assert list(speed[0].get_ydata()) == [100, 99, 80, 80, 81, 80]
    (temperature,) = temperature_axes.get_lines()
    assert temperature.get_linestyle() == "--"
    assert list(temperature.get_ydata()[[0, 1, 2, 3, 5]]) == [60, 70, 90, 91, 92]  # a window without a reading: a gap
    assert temperature_axes.get_ylabel() == "temperature (°C), dashed"


def test_no_sustained_run_and_no_energy_say_so() -> None:
    analysis = load_report_data([FIXTURES / "host-a.csv"])
    text = render_markdown(sustained.build(analysis), "plots")
    assert "No cell ran the sustained mode" in text and "No energy counter was read for any cell." in text
    assert sustained_figure(sustained_rows(analysis.data.measured)) is None

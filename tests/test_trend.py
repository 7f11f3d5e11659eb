"""bench trend: a PNG per metric per cell over the runs of a history folder, and a markdown index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.image import imread

from bench.cli import main
from tests.test_compare import STEADY_DECODE, cells, row, write


def make_history(directory: Path) -> list[str]:
    """Three nights on one host; decode 100 -> 100 -> 80 tok/s for the first cell. Returns the cell ids."""
    first, second = cells()
    for night, scale in enumerate((1.0, 1.0, 0.8), start=1):
        stamp = f"2025-01-0{night}T02:00:00Z"
        write(
            directory / "gpu-a" / f"2025010{night}T020000Z.csv",
            [
                row(first, decode=tuple(scale * v for v in STEADY_DECODE), started=stamp),
                row(second, started=stamp, peak_rss_bytes=None, unstable=night == 2),
            ],
        )
    return [first.cell_id, second.cell_id]


def test_trend_writes_a_plot_per_metric_per_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first_id, second_id = make_history(tmp_path / "hist")
    output = tmp_path / "out" / "trend.md"
    assert main(["trend", str(tmp_path / "hist"), "-o", str(output)]) == 0
    markdown = output.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    measured = {"prefill_tok_s", "decode_tok_s", "ttft_ms", "itl_ms_p50", "itl_ms_p99"}
    assert {Path(i).name for i in images} == (
        {f"{first_id}-{m}.png" for m in measured | {"peak_rss_bytes"}} | {f"{second_id}-{m}.png" for m in measured}
    )
    for image in images:
        pixels = imread(output.parent / image)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    decode_line = next(
        line for line in markdown.split(f"`{first_id}`")[1].splitlines() if line.startswith("| decode_tok_s |")
    )
    # runs, first, latest, vs previous run, best
    assert "| 3 | 100.0 | 80.0 | -20.0% | 100.0 |" in decode_line  # numbers as the report writes them
    rss_line = next(line for line in markdown.splitlines() if line.startswith("| peak_rss_bytes |"))
    assert "| 3 | 300.0 MiB | 300.0 MiB | +0.0% | 300.0 MiB |" in rss_line
    assert "3 runs, 2025-01-01 02:00 to 2025-01-03 02:00 UTC" in markdown
    assert f"trend -> {output} (11 plots)" in capsys.readouterr().err


def test_trend_of_chosen_metrics_and_host(tmp_path: Path) -> None:
    make_history(tmp_path / "hist")
    output = tmp_path / "trend.md"
    assert (
        main(
            [
                "trend",
                str(tmp_path / "hist"),
                "-o",
                str(output),
                "--metrics",
                "decode_tok_s",
                "--host",
                "gpu-a",
            ]
        )
        == 0
    )
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "gpu-a").glob("*.png")) == ["decode_tok_s.png"] * 2


def test_trend_without_results_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(tmp_path / "hist")
    assert main(["trend", str(tmp_path / "hist"), "--host", "elsewhere", "-o", str(tmp_path / "t.md")]) == 2
    assert "no ok result rows for host elsewhere" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["trend", str(tmp_path / "empty"), "-o", str(tmp_path / "t.md")]) == 2


def test_a_driver_update_does_not_split_a_series(tmp_path: Path) -> None:
    """A series is one cell on one machine by the recomputed machine key: nights whose `fingerprint` column
    changed with the GPU driver (the old rule hashed it) stay one series."""
    first, _ = cells()
    for night, driver in enumerate(("550.54", "555.42", "560.35"), start=1):
        stamp = f"2025-01-0{night}T02:00:00Z"
        write(
            tmp_path / "hist" / "gpu-a" / f"2025010{night}T020000Z.csv",
            [row(first, started=stamp, gpu_driver=driver, fingerprint=f"old-rule-{driver}")],
        )
    output = tmp_path / "trend.md"
    assert main(["trend", str(tmp_path / "hist"), "-o", str(output), "--metrics", "decode_tok_s"]) == 0
    markdown = output.read_text()
    assert markdown.count(f"`{first.cell_id}`") == 1 and "3 runs, 2025-01-01 02:00 to 2025-01-03 02:00 UTC" in markdown

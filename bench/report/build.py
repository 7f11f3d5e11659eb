"""The report: each section, in reading order, turns the analysis into blocks; write_report renders them.

`write_report` is what `bench report` and `bench run --report` call. A markdown report gets its
PNG plots in a folder beside it (`<name>-plots/`, linked relatively); an HTML report is one file.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.report.analysis import Analysis, analyse, load_report_data
from bench.report.document import Block
from bench.report.sections import (
    across,
    answer_time,
    capacity,
    devices,
    fits,
    method,
    pareto,
    recommendations,
    served,
    summary,
    sustained,
)

__all__ = ["FORMATS", "SECTIONS", "Analysis", "analyse", "build_document", "load_report_data", "write_report"]

FORMATS = ("md", "html")

SECTIONS = (summary, devices, across, capacity, served, answer_time, sustained, pareto, fits, recommendations, method)


def build_document(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = []
    for section in SECTIONS:
        blocks += section.build(analysis)
    return blocks


def plots_dir_name(output: Path) -> str:
    return f"{output.stem}-plots"


def write_report(
    results: list[Path], output: Path, fmt: str = "md", keep_all: bool = False, suite_path: Path | None = None
) -> Path:
    if fmt not in FORMATS:
        raise BenchError(f"report format {fmt!r} is not known; expected one of: {', '.join(FORMATS)}")
    data = load_report_data(results, keep_all=keep_all, suite_path=suite_path)
    blocks = build_document(data)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "html":
            from bench.report.html import render_html

            output.write_text(render_html(blocks, title="Benchmark report"), encoding="utf-8")
        else:
            from bench.report.markdown import render_markdown
            from bench.report.plots import write_images

            image_dir = plots_dir_name(output)
            write_images(blocks, output.parent / image_dir)
            output.write_text(render_markdown(blocks, image_dir), encoding="utf-8")
    except OSError as exc:
        raise BenchError(f"cannot write the report to {output}: {exc.strerror or exc}") from None
    return output

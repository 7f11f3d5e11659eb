"""Reports: result CSVs from any number of runs and machines -> markdown (or HTML) with plots.

`write_report` is what `bench report` and `bench run --report` call. A markdown report gets its
PNG plots in a folder beside it (`<name>-plots/`, linked relatively); an HTML report is one file.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError

FORMATS = ("md", "html")


def plots_dir_name(output: Path) -> str:
    return f"{output.stem}-plots"


def write_report(
    results: list[Path], output: Path, fmt: str = "md", keep_all: bool = False, suite_path: Path | None = None
) -> Path:
    from bench.report.build import build_document, load_report_data

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

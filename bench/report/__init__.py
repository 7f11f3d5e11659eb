"""Reports: result CSVs from any number of runs and machines -> markdown (or HTML) with plots."""
from __future__ import annotations

from pathlib import Path

from bench.report.markdown import build_markdown
from bench.results import read_results


def write_report(results: list[Path], output: Path, fmt: str = "md", keep_all: bool = False,
                 suite_path: Path | None = None) -> Path:
    frame = read_results(results)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_markdown(frame), encoding="utf-8")
    return output

"""The report document: each section, in reading order, turns the analysis into blocks."""

from __future__ import annotations

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
    summary,
)

__all__ = ["SECTIONS", "Analysis", "analyse", "build_document", "load_report_data"]

SECTIONS = (summary, devices, across, capacity, answer_time, pareto, fits, recommendations, method)


def build_document(analysis: Analysis) -> list[Block]:
    blocks: list[Block] = []
    for section in SECTIONS:
        blocks += section.build(analysis)
    return blocks

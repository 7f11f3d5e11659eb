"""One module per report section; each has `build(analysis) -> list[Block]`. table.py is what they share."""

from bench.report.sections.table import Column, count_text, frame_table, knob_table_columns, present, sort_configs

__all__ = ["Column", "count_text", "frame_table", "knob_table_columns", "present", "sort_configs"]

"""Result rows: the CSV schema (columns), crash-safe append and validated read (io), the newest row per cell
(select). The names below are bench.results' face."""

from bench.results.columns import (
    COLUMNS,
    SAMPLE_SEP,
    ResultRow,
    Status,
    csv_text,
    is_missing,
    samples_from_text,
    samples_to_text,
)
from bench.results.io import (
    ResultsWriter,
    drop_partial_last_line,
    expand_result_paths,
    measured_cell_ids,
    read_header,
    read_results,
)

__all__ = [
    "COLUMNS",
    "SAMPLE_SEP",
    "ResultRow",
    "ResultsWriter",
    "Status",
    "csv_text",
    "drop_partial_last_line",
    "expand_result_paths",
    "is_missing",
    "measured_cell_ids",
    "read_header",
    "read_results",
    "samples_from_text",
    "samples_to_text",
]

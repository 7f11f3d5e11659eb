"""A cell's outcome -> its CSV row: one function for the local run and the fleet coordinator alike, from the
same planned fields (a skipped cell's, a measured group's: bench.run.host)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hardware import Fingerprint
from bench.plan import PlannedCell
from bench.results import COLUMNS, ResultRow, ResultsWriter, Status
from bench.run.stamp import with_finished_stamp
from bench.suite import Cell


@dataclass
class RowOut:
    """One cell's outcome, without the machine columns (the caller adds the measuring host's fingerprint)."""

    cell: Cell
    status: Status
    reason: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    model_source: str = ""


def skipped_row(item: PlannedCell) -> RowOut:
    """The row of a cell the plan skipped: its reason and what the plan knew (memory estimate, weights)."""
    return RowOut(item.cell, "skipped", item.skip_reason, item.row_fields())


def build_row(row: RowOut, fingerprint: Fingerprint, run_id: str) -> Any:
    """The CSV row: the outcome's fields, the cell's identity and the measuring machine's columns."""
    unknown = sorted(set(row.fields) - set(COLUMNS))
    if unknown:  # nothing measured is silently dropped: a field without a column is a bug to fix here
        raise BenchError(f"internal: measured fields without a CSV column: {', '.join(unknown)}")
    values: dict[str, Any] = with_finished_stamp(dict(row.fields))
    values.update(row.cell.fields())
    values.update(fingerprint.row_fields(row.cell.device_kind, row.cell.device_index, row.cell.backend))
    values.update(
        run_id=run_id, cell_id=row.cell.cell_id, status=row.status, reason=row.reason, model_source=row.model_source
    )
    return ResultRow.model_validate(values)


class RowSink:
    """Appends rows crash-safely and counts them by status."""

    def __init__(self, path: Path, run_id: str, on_row: Callable[[RowOut], None]) -> None:
        self.path = path
        self.run_id = run_id
        self.writer = ResultsWriter(path)
        self.counts: dict[str, int] = dict.fromkeys(Status.__args__, 0)
        self.on_row = on_row

    def write(self, row: RowOut, fingerprint: Fingerprint) -> None:
        self.writer.append(build_row(row, fingerprint, self.run_id))
        self.counts[row.status] += 1
        self.on_row(row)

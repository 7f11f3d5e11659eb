"""What every report section builds its tables from: columns of a frame, knob columns, sorting and counts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report import knobs
from bench.report.data import WORKLOAD_COLUMNS
from bench.report.document import Strong, Table


@dataclass(frozen=True)
class Column:
    header: str
    values: pd.Series  # display text, aligned with the frame the table is built from
    numeric: bool = False


def frame_table(columns: Sequence[Column], strong_rows: pd.Series | None = None, strong_column: str = "") -> Table:
    """A table from display-text columns; where `strong_rows` is True, the cell of `strong_column`
    (default: the first column) is emphasized."""
    if not columns:
        return Table(headers=[], rows=[])
    cells = np.empty((len(columns[0].values), len(columns)), dtype=object)  # by position: indexes may differ
    for position, column in enumerate(columns):
        cells[:, position] = column.values.to_numpy(dtype=object)
    cells[pd.isna(cells)] = ""
    rows = cells.tolist()
    if strong_rows is not None:
        index = next((i for i, c in enumerate(columns) if c.header == strong_column), 0)
        for position in np.flatnonzero(strong_rows.to_numpy(dtype=bool)):
            rows[position][index] = Strong(str(rows[position][index]))
    return Table(headers=[c.header for c in columns], rows=rows, numeric=[c.numeric for c in columns])


def knob_table_columns(frame: pd.DataFrame, names: Sequence[str]) -> list[Column]:
    """A column per knob in `names`: the registry's label as header, its display text as values."""
    return [Column(knobs.label(n), knobs.knob_text(frame, n), knobs.is_numeric(n)) for n in names]


def present(frame: pd.DataFrame, column: str) -> bool:
    """The column exists and holds at least one value."""
    return column in frame and frame[column].notna().any()


def sort_configs(frame: pd.DataFrame, first: Sequence[str] = ()) -> pd.DataFrame:
    """Stable, readable order: (first...), model, higher precision first, quant, knobs, workload, depth, backend
    (the ones `frame` has: a capacity table has no `parallel` column). The backend last: rows of two backends with
    the same model, quantization and `parallel` (an engine and a server of it) sit side by side; a knob only one
    backend takes is blank for the other, and blanks sort last."""
    keys = [*first, "model_id", "_bits", "quantization", *knobs.knob_names(), *WORKLOAD_COLUMNS]
    keys = [k for k in keys if k in frame or k == "_bits"] + (["depth"] if "depth" in frame else []) + ["backend"]
    # Sort the key columns alone, then take the rows once: a wide frame is copied once, not twice.
    keyed = pd.DataFrame({k: frame[k] for k in keys if k != "_bits"}).reset_index(drop=True)
    keyed["_bits"] = -fmt.as_float(frame["bits_per_weight"]).to_numpy()
    order = keyed.sort_values(keys, na_position="last", kind="stable").index.to_numpy()
    return frame.take(order)


def count_text(number: int, singular: str, plural: str | None = None) -> str:
    return f"{number:,} {singular if number == 1 else (plural or singular + 's')}"

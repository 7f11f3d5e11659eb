"""Which row counts: one rule for "the newest row of each cell on each machine", for report, compare,
export and trend alike.

Matching keys, both recomputed from a row's own columns (so CSVs written before a rule changed still
match):
- the cell: `row_cell_id(row)`, today's `cell_id` rule (bench.suite.cell_id_of) applied to the row's
  model, quantization, backend, device, workload and knob columns, so a CSV whose `cell_id` column was
  computed by an older rule (suite name, repetitions) still matches;
- the machine: `bench.hardware.stable_fingerprint(row)`: host and stable hardware (CPU, cores, RAM to the
  GiB, GPU count and model), never the `fingerprint` column, so a driver or kernel update keeps the machine.

The newest row is the one whose measurement ended last: rows are ordered by `finished_utc`, then
`started_utc` (ISO 8601, compared as instants), then reading order (files in the order given, a folder's
files by name, lines in file order; the later wins). A missing time is never taken as "oldest" (a failure
written without a stamp by an older bench would hide behind last week's success): a row without
`finished_utc` is placed at its `started_utc`, else at the last time its own file records, else at that
file's modification time, else at the time of the row read before it. Rows without a cell id cannot be
matched, so all of them are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from bench.hardware import STABLE_HARDWARE_COLUMNS, stable_fingerprint
from bench.missing import is_missing
from bench.suite import KNOBS, Cell, cell_id_of
from bench.suite.cell import IDENTITY_FIELDS

CELL_KEY = "cell_key"  # column newest_rows() adds: row_cell_id of the row
MACHINE_KEY = "machine_key"  # column newest_rows() adds: stable_fingerprint of the row
# The columns cell_id_of() reads; cell keys are computed once per distinct combination of them.
CELL_ID_COLUMNS: tuple[str, ...] = (*IDENTITY_FIELDS, *KNOBS)
READING_ORDER = "_reading_order"  # column oldest_first() adds


def clean(value: Any) -> Any:
    """None for a missing CSV value (bench.missing.is_missing), else the value as read."""
    return None if is_missing(value) else value


# A cell measured on synthetic weights is matched apart from the same cell on the real file (a `fallback:
# synthetic` cell has one cell_id either way): report, compare, export and trend never mix the two.
SYNTHETIC_KEY_SUFFIX = "~synthetic"


def row_cell_id(row: Mapping[str, Any]) -> str:
    """The id a row's cell is matched by: recomputed from the row's columns by today's rule
    (bench.suite.cell_id_of), so rows written before the rule changed match today's; a row without the
    cell's columns (a hand-made CSV) keeps its `cell_id` column. Synthetic weights add SYNTHETIC_KEY_SUFFIX."""
    if not clean(row.get("model_id")):
        key = str(clean(row.get("cell_id")) or "")
    else:
        key = cell_id_of(row)
    return key + SYNTHETIC_KEY_SUFFIX if key and clean(row.get("weights")) == "synthetic" else key


def row_label(row: Mapping[str, Any]) -> str:
    """The cell's readable label, as `bench run` prints it."""
    fields = {name: clean(row.get(name)) for name in Cell.model_fields}
    fields |= {name: value for name in KNOBS if (value := clean(row.get(name))) is not None}  # else defaults
    try:
        return Cell.model_validate(fields).label
    except ValidationError:  # a hand-made CSV lacking workload columns: name what it has
        parts = [str(fields[k]) for k in ("model_id", "quantization", "backend", "device_id") if fields[k]]
        return " ".join(parts) or f"cell {row.get('cell_id')}"


def _per_distinct(frame: pd.DataFrame, columns: tuple[str, ...], key: Callable[[dict[str, Any]], str]) -> pd.Series:
    """`key` of each row, called once per distinct combination of `columns` (a long history repeats them)."""
    present = [c for c in columns if c in frame.columns]
    if frame.empty or not present:
        return pd.Series([key({})] * len(frame), index=frame.index, dtype=object)
    # One 64-bit hash per row of those columns (vectorized), then one key per distinct hash. Two distinct
    # combinations share a hash with probability about n^2 / 2^65: 3e-10 for 100,000 of them.
    hashes = pd.util.hash_pandas_object(frame[present], index=False).to_numpy()
    _, first, codes = np.unique(hashes, return_index=True, return_inverse=True)
    distinct = frame[present].iloc[first].astype(object)
    records = distinct.where(distinct.notna(), None).to_dict("records")  # missing values as None
    keys = np.array([key(record) for record in records], dtype=object)
    return pd.Series(keys[codes.reshape(-1)], index=frame.index, dtype=object)


def cell_keys(frame: pd.DataFrame) -> pd.Series:
    """row_cell_id of every row, vectorized."""
    keys = _identity_keys(frame)
    if "weights" not in frame.columns:
        return keys
    synthetic = frame["weights"].astype(str).eq("synthetic") & keys.ne("")
    return keys.where(~synthetic, keys + SYNTHETIC_KEY_SUFFIX)


def _identity_keys(frame: pd.DataFrame) -> pd.Series:
    """Rows with the cell's columns get cell_id_of, computed once per distinct combination of
    CELL_ID_COLUMNS; the others keep their `cell_id` column."""
    stored = frame["cell_id"] if "cell_id" in frame.columns else pd.Series(pd.NA, index=frame.index)
    keys = stored.astype(object).where(stored.notna(), "").astype(str)
    if "model_id" not in frame.columns:
        return keys
    described = frame["model_id"].notna()
    if described.all():
        return _per_distinct(frame, CELL_ID_COLUMNS, cell_id_of)
    if described.any():
        keys[described] = _per_distinct(frame[described], CELL_ID_COLUMNS, cell_id_of)
    return keys


def add_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the CELL_KEY and MACHINE_KEY columns."""
    return _with_columns(
        frame,
        {
            CELL_KEY: cell_keys(frame),
            MACHINE_KEY: _per_distinct(frame, STABLE_HARDWARE_COLUMNS, stable_fingerprint),
        },
    )


def _with_columns(frame: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """`frame` with `columns` set, in one concatenation: a wide frame built column by column (the report's)
    makes pandas warn about fragmentation at every single-column insert."""
    kept = frame.drop(columns=[c for c in columns if c in frame.columns])
    return pd.concat([kept, pd.DataFrame(columns, index=frame.index)], axis=1)


def _instants(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    return pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")


def _file_mtime(source: str) -> pd.Timestamp:
    path = Path(source)
    return pd.Timestamp(path.stat().st_mtime if path.exists() else 0.0, unit="s", tz="UTC")


def measured_at(frame: pd.DataFrame) -> pd.Series:
    """When each row's outcome happened, never missing where anything places it (the module's rule): its
    `finished_utc`, else `started_utc`, else the last time its file records, else the file's modification time,
    else the time of the row read before it."""
    finished = _instants(frame, "finished_utc")
    instants = finished.fillna(_instants(frame, "started_utc"))
    if "source_file" in frame.columns and instants.isna().any():
        files = frame["source_file"].astype(str)
        instants = instants.fillna(instants.groupby(files, sort=False).transform("max"))
        missing = instants.isna()
        if missing.any():
            instants = instants.where(~missing, files[missing].map(_file_mtime))
    return instants.ffill()


def oldest_first(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows in measurement order, oldest first (the module's rule), with a reading-order column."""
    ordered = _with_columns(
        frame,
        {
            "_finished": measured_at(frame),
            "_started": _instants(frame, "started_utc"),
            READING_ORDER: np.arange(len(frame)),
        },
    )
    ordered = ordered.sort_values(["_finished", "_started", READING_ORDER], na_position="first", kind="stable")
    return ordered.drop(columns=["_finished", "_started"])


def newest_rows(frame: pd.DataFrame, across_machines: bool = False, per: tuple[str, ...] = ()) -> pd.DataFrame:
    """The newest row of each cell on each machine (of each cell alone `across_machines`; of each value of
    the `per` columns too, e.g. per=("source_file",) for each run), in reading order, with the key columns."""
    if frame.empty:
        return add_keys(frame)
    ordered = oldest_first(add_keys(frame))
    keys = [CELL_KEY, *([] if across_machines else [MACHINE_KEY]), *per]
    has_cell = ordered[CELL_KEY] != ""
    newest = ordered[has_cell].drop_duplicates(keys, keep="last")
    kept = pd.concat([newest, ordered[~has_cell]]).sort_values(READING_ORDER, kind="stable")
    return kept.drop(columns=READING_ORDER)


def run_started(frame: pd.DataFrame) -> pd.Series:
    """Per row, when its run started: the earliest `started_utc` in its file (a file is one run), else the
    file's modification time; UTC instants."""
    started = _instants(frame, "started_utc")
    first = started.groupby(frame["source_file"], sort=False).transform("min")
    missing = first.isna()
    if missing.any():
        first = first.where(~missing, frame.loc[missing, "source_file"].astype(str).map(_file_mtime))
    return first

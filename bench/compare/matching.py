"""Result rows -> one side per cell, keyed for matching (bench.results.select's keys and newest-row rule)."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

import pandas as pd

from bench.compare.metrics import METRICS
from bench.compare.model import CellKey, CellSide
from bench.errors import BenchError
from bench.results import samples_from_text
from bench.results.select import CELL_KEY, MACHINE_KEY, clean, newest_rows, row_label
from bench.stats import UNSTABLE_CV_PCT

Row = Mapping[str, Any]

# Compared between matched rows and noted when they differ ("changed since baseline"); the machine key
# leaves them out on purpose, so an update never stops the gate from judging the cells.
SOFTWARE_COLUMNS = (
    "gpu_driver",
    "cuda_version",
    "os",
    "backend_build",
    "backend_version",
    "bench_version",
    "python_version",
    "cpu_flags",
)

MATCH_RULE = {
    False: "cell_id + machine (host and stable hardware; software versions are noted, not matched)",
    True: "cell_id alone (any machine)",
}


def _text(row: Row, column: str) -> str:
    return str(clean(row.get(column)) or "")


def _input_text(row: Row, column: str) -> str:
    """A same-input column's value as text, a whole number without '.0' (a column holding blanks reads as float)."""
    value = clean(row.get(column))
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _row_unstable(row: Row) -> bool:
    flagged = clean(row.get("unstable"))
    if flagged is not None and bool(flagged):
        return True
    cvs = [clean(row.get(c)) for c in ("prefill_tok_s_cv_pct", "decode_tok_s_cv_pct")]
    return any(cv is not None and float(cv) > UNSTABLE_CV_PCT for cv in cvs)


def side_from_rows(key: CellKey, rows: list[Row]) -> CellSide:
    """`rows` are one cell's rows, oldest first, at most one per run."""
    newest = rows[-1]
    ok = [r for r in rows if r.get("status") == "ok"]
    run_values: dict[str, list[float]] = {}
    samples: dict[str, list[float]] = {}
    for metric in METRICS:
        found = [float(v) for v in (clean(r.get(metric.column)) for r in ok) if v is not None]
        if found:
            run_values[metric.name] = found
        if metric.samples:
            samples[metric.samples] = [s for r in ok for s in samples_from_text(clean(r.get(metric.samples)))]
    reference = ok[-1] if ok else newest
    return CellSide(
        key=key,
        cell_id=_text(newest, CELL_KEY) or _text(newest, "cell_id"),
        machine=_text(newest, MACHINE_KEY),
        host=_text(newest, "host"),
        label=row_label(newest),
        suite=_text(newest, "suite"),
        status="ok" if ok else _text(newest, "status"),
        reason="" if ok else _text(newest, "reason"),
        unstable=any(_row_unstable(r) for r in ok),
        runs=len(ok) or 1,
        values={name: statistics.fmean(found) for name, found in run_values.items()},
        run_values=run_values,
        samples=samples,
        inputs={m.same_input: _input_text(reference, m.same_input) for m in METRICS if m.same_input and ok},
        software={column: _text(reference, column) for column in SOFTWARE_COLUMNS},
        system_warnings=[w for r in rows if (w := _text(r, "system_warnings"))],
    )


def _key(row: Row, across_machines: bool) -> CellKey:
    return (str(row[CELL_KEY]),) if across_machines else (str(row[CELL_KEY]), str(row[MACHINE_KEY]))


def _matchable(frame: pd.DataFrame, across_machines: bool) -> list[dict[str, Any]]:
    """The newest row of each cell (and machine) as records; rows without a cell id cannot match."""
    rows = newest_rows(frame, across_machines)
    return [r for r in rows.to_dict("records") if r[CELL_KEY]]


def sides_from_frame(frame: pd.DataFrame, across_machines: bool) -> dict[CellKey, CellSide]:
    """One side from result files: the newest row of each cell."""
    if across_machines:
        _reject_ambiguous(frame)
    return {
        (key := _key(row, across_machines)): side_from_rows(key, [row]) for row in _matchable(frame, across_machines)
    }


def sides_from_runs(frames: list[pd.DataFrame], across_machines: bool) -> dict[CellKey, CellSide]:
    """One side from several runs (oldest first): per cell, one row per run."""
    rows: dict[CellKey, list[Row]] = {}
    for frame in frames:
        for row in _matchable(frame, across_machines):
            rows.setdefault(_key(row, across_machines), []).append(row)
    return {key: side_from_rows(key, found) for key, found in rows.items()}


def _reject_ambiguous(frame: pd.DataFrame) -> None:
    """Matching by cell alone needs one machine per cell on each side."""
    keyed = newest_rows(frame)
    machines = keyed[keyed[CELL_KEY] != ""].groupby(CELL_KEY)[MACHINE_KEY].nunique()
    if (machines > 1).any():
        cell_id = machines[machines > 1].index[0]
        raise BenchError(
            f"--across-machines: cell {cell_id} was measured on {int(machines.max())} machines in "
            f"{', '.join(sorted(set(frame['source_file'].astype(str))))}; give one machine's results per side"
        )


def no_match_reason(baseline: dict[CellKey, CellSide], current: dict[CellKey, CellSide]) -> str:
    if not baseline or not current:
        return f"the {'baseline' if not baseline else 'current'} side holds no result rows"
    base_suites = sorted({b.suite for b in baseline.values()})
    cur_suites = sorted({c.suite for c in current.values()})
    if set(base_suites).isdisjoint(cur_suites):
        return (
            f"different suites: baseline has {', '.join(base_suites)}, current has {', '.join(cur_suites)}; "
            "compare results of the same suite"
        )
    if {b.cell_id for b in baseline.values()}.isdisjoint(c.cell_id for c in current.values()):
        return (
            "no cell in common: the suites differ in models, quantizations, devices, knobs or workload "
            "(a cell is identified by all of them, the `cell_id` column)"
        )

    def machines(sides: dict[CellKey, CellSide]) -> str:
        return ", ".join(sorted({f"{s.host} ({s.machine})" for s in sides.values()}))

    return (
        f"the common cells were measured on different machines: baseline on {machines(baseline)}, current on "
        f"{machines(current)}; a regression gate compares a machine with itself "
        "(pass --across-machines to match cells by cell_id alone)"
    )

"""Result rows: schema, crash-safe CSV append, reading back with clear errors.

One row per cell. A row is appended with a single write() of a whole line and
flushed, so a run killed at any instant leaves every finished row and no half
line; a half line left by a power cut is dropped (and reported) on read.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from bench.errors import BenchError
from bench.results.columns import COLUMNS, LEGACY_SOFTWARE_COLUMNS, ResultRow, csv_text

_MAX_BLOCKS = 100  # pandas' PerformanceWarning threshold for a fragmented frame
# Columns added after rows were first written, and what an older CSV's rows mean by leaving them out.
_DEFAULTS_OF_NEW_COLUMNS = {"weights": "real"}


def _line(values: Iterable[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([csv_text(v) for v in values])
    return buffer.getvalue()


@dataclass
class ResultsWriter:
    """Appends rows to a CSV, one atomic write per row."""

    path: Path

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            self._write(_line(COLUMNS))
        else:
            drop_partial_last_line(self.path)
            header = read_header(self.path)
            if tuple(header) != COLUMNS:
                raise BenchError(
                    f"{self.path}: its columns differ from this version of bench; "
                    "resume into a new file or re-run the suite"
                )

    def append(self, row: BaseModel) -> None:
        self._write(_line(getattr(row, c) for c in COLUMNS))

    def _write(self, text: str) -> None:
        data = text.encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, data)
            if written != len(data):
                # Never leave half a line: take back the partial write.
                os.ftruncate(fd, os.fstat(fd).st_size - written)
                raise OSError(28, "short write (disk full?)")
            os.fsync(fd)
        except OSError as exc:
            raise BenchError(
                f"cannot write results to {self.path}: {exc.strerror or exc}; rows written before are intact",
                hint="free disk space or pass --output to a file on another disk, then --resume it",
            ) from None
        finally:
            os.close(fd)


def drop_partial_last_line(path: Path) -> bool:
    """Remove a trailing line without newline (a write cut by power loss). Returns True if one was dropped."""
    size = path.stat().st_size
    if size == 0:
        return False
    with path.open("rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return False
        handle.seek(0)
        data = handle.read()
        handle.truncate(data.rfind(b"\n") + 1)
    return True


def read_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return next(csv.reader(handle), [])


def read_results(paths: Iterable[str | Path], skip: Collection[str] = frozenset()) -> pd.DataFrame:
    """Read result CSVs (files or folders of *.csv) into one frame, with errors that name file and line.

    `skip`: columns the caller never reads; they are not parsed (a long history reads faster without them).
    """
    frames = []
    for path in expand_result_paths(paths):
        frames.append(_read_one(path, skip))
    if not frames:
        raise BenchError("no result files given (expected one or more .csv files or folders holding them)")
    frame = pd.concat(frames, ignore_index=True, sort=False)
    missing = [column for column in COLUMNS if column not in frame.columns and column not in skip]
    if missing:  # one concat, not a column at a time (which fragments the frame)
        blank = pd.DataFrame(pd.NA, index=frame.index, columns=missing, dtype=object)
        frame = pd.concat([frame, blank], axis=1)
    for column, default in _DEFAULTS_OF_NEW_COLUMNS.items():
        if column in frame.columns:
            frame[column] = frame[column].fillna(default)
    # pandas' parser leaves about a block per column; past 100 blocks pandas warns at every later insert, so a
    # wide frame is consolidated here (one copy). A caller that skips the columns it never reads saves both.
    return frame.copy() if frame.shape[1] > _MAX_BLOCKS else frame


def expand_result_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(path.rglob("*.csv"))
            if not found:
                raise BenchError(f"no .csv files in {path}/{_folder_listing(path)}")
            yield from found
        elif path.exists():
            yield path
        else:
            raise BenchError(f"results file not found: {path}")


def _folder_listing(folder: Path, shown: int = 10) -> str:
    """' (it holds: a.txt, logs/, ...)': what a folder without result files holds, said in the error."""
    entries = sorted(folder.iterdir())
    if not entries:
        return " (the folder is empty)"
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries[:shown]]
    more = f", and {len(entries) - shown} more" if len(entries) > shown else ""
    return f" (it holds: {', '.join(names)}{more})"


_NUMERIC_TYPES = {name: field.annotation for name, field in ResultRow.model_fields.items()}


def _read_one(path: Path, skip: Collection[str] = frozenset()) -> pd.DataFrame:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    if not data or data.isspace():  # not strip(): that copies a large file
        raise BenchError(f"{path}: empty file, expected a bench results CSV with a header line")
    end = data.find(b"\n")
    try:  # the first line only: the whole file is decoded only where the careful path needs it
        first_line = data[: end if end >= 0 else None].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    header = next(csv.reader(io.StringIO(first_line)))
    missing = [c for c in ("suite", "model_id", "status") if c not in header]
    if missing:
        raise BenchError(f"{path}:1: not a bench results CSV: header lacks {', '.join(missing)}")
    fast = _parse_fast(header, data, skip)
    if fast is not None:  # joined, not inserted: the parser's frame holds a block per column
        fast = _read_legacy_software(fast)
        return pd.concat([fast, pd.Series(str(path), index=fast.index, name="source_file", dtype=object)], axis=1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BenchError(f"cannot read results file {path}: {exc}") from None
    # The careful path: record by record, so a bad file gets an error naming its line.
    records: list[list[str]] = []
    record_lines: list[int] = []  # physical line where each record starts (quoted fields may span lines)
    reader = csv.reader(io.StringIO(text))
    next(reader, None)
    previous_end = reader.line_num
    for record in reader:
        start, previous_end = previous_end + 1, reader.line_num
        if not record:
            continue
        if len(record) != len(header):
            raise BenchError(
                f"{path}:{start}: expected {len(header)} fields as in the header, found {len(record)} "
                "(truncated or hand-edited line?)"
            )
        records.append(record)
        record_lines.append(start)
    frame = pd.DataFrame(records, columns=header, dtype=object)
    frame = frame.drop(columns=[c for c in header if c in skip]).replace("", pd.NA)
    for column in frame.columns:
        if column in _NUMERIC_TYPES and _is_numeric(_NUMERIC_TYPES[column]):
            converted = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column].notna() & converted.isna()
            if bad.any():
                line = record_lines[int(bad.idxmax())]
                raise BenchError(
                    f"{path}:{line}: column {column!r} holds {frame[column][bad.idxmax()]!r}, expected a number"
                )
            frame[column] = converted
        elif column in _NUMERIC_TYPES and _is_bool(_NUMERIC_TYPES[column]):
            frame[column] = frame[column].map({"True": True, "False": False, "true": True, "false": False})
    frame = _read_legacy_software(frame)
    frame["source_file"] = str(path)
    return frame


def _read_legacy_software(frame: pd.DataFrame) -> pd.DataFrame:
    """An older file's per-backend software columns, read as backend_version / backend_build of that backend's
    rows (the old columns are dropped: nothing reads them)."""
    old = [column for column in LEGACY_SOFTWARE_COLUMNS if column in frame.columns]
    if not old:
        return frame
    mapped: dict[str, pd.Series] = {}
    for column in old:
        backend, target = LEGACY_SOFTWARE_COLUMNS[column]
        blank = pd.Series(pd.NA, index=frame.index, dtype=object)
        current = mapped.get(target, frame[target] if target in frame.columns else blank)
        theirs = frame[column].where(frame["backend"] == backend) if "backend" in frame.columns else blank
        mapped[target] = current.where(current.notna(), theirs)
    kept = frame.drop(columns=[*old, *(c for c in mapped if c in frame.columns)])
    return pd.concat([kept, pd.DataFrame(mapped, index=frame.index)], axis=1)


def _field_counts_match(raw: bytes, width: int) -> bool:
    """Every non-blank record has `width` fields. Vectorized over the bytes: a comma or newline separates
    only outside quotes, i.e. after an even number of quote characters (an escaped quote is doubled)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    if quotes.size % 2:
        return False
    newlines = np.flatnonzero(data == ord("\n"))
    newlines = newlines[np.searchsorted(quotes, newlines, side="right") % 2 == 0]
    commas = np.flatnonzero(data == ord(","))
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [data.size]))
    counts = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
    if quotes.size:  # take back the commas inside each quoted stretch, from the record holding it
        opens, closes = quotes[0::2], quotes[1::2]
        inside = np.searchsorted(commas, closes) - np.searchsorted(commas, opens)
        np.subtract.at(counts, np.searchsorted(ends, opens), inside)
    blank = (ends - starts == 0) | ((ends - starts == 1) & (data[np.minimum(starts, data.size - 1)] == ord("\r")))
    return bool((counts[~blank] + 1 == width).all())


def _parse_fast(header: list[str], data: bytes, skip: Collection[str] = frozenset()) -> pd.DataFrame | None:
    """pandas' C parser, numbers parsed as it reads: ~10x faster on long histories. None when it cannot
    vouch for the file (a bad field count or value, or a layout it cannot check): then the careful path runs."""
    numeric = {c for c in header if c in _NUMERIC_TYPES and _is_numeric(_NUMERIC_TYPES[c])}
    if len(set(header)) != len(header) or not _field_counts_match(data, len(header)):
        return None  # pandas would pad a short record silently
    try:  # every empty cell is missing, as the careful path reads it (NaN here: no per-cell pass afterwards)
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype={c: "float64" if c in numeric else object for c in header},
            keep_default_na=False,
            na_values={c: [""] for c in header},
            usecols=[c for c in header if c not in skip],
        )
    except (ValueError, pd.errors.ParserError):  # too many fields, text in a number column, or not UTF-8
        return None
    kept = [c for c in header if c not in skip]
    if list(frame.columns) != kept:
        return None
    for column in kept:  # replaced in place, only the columns that need it (rebuilding the frame copies all)
        annotation = _NUMERIC_TYPES.get(column)
        if column in numeric and "int" in str(annotation):
            values = frame[column].to_numpy()
            if not np.isnan(values).any() and (values % 1 == 0).all():
                frame[column] = values.astype(np.int64)  # as pd.to_numeric gives for whole numbers
        elif annotation is not None and _is_bool(annotation):
            frame[column] = frame[column].map({"True": True, "False": False, "true": True, "false": False})
    return frame


def _is_numeric(annotation: Any) -> bool:
    text = str(annotation)
    return ("int" in text or "float" in text) and "bool" not in text


def _is_bool(annotation: Any) -> bool:
    return "bool" in str(annotation)


def measured_cell_ids(path: Path) -> set[str]:
    """Cells already finished in a results file (for --resume): any status but a crash of bench itself."""
    if not path.exists():
        return set()
    drop_partial_last_line(path)
    frame = _read_one(path)
    return set(frame["cell_id"].dropna().astype(str))

"""Results CSV: one atomic line per row, partial lines dropped, bad files named by line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import BenchError
from bench.missing import is_missing
from bench.results import COLUMNS, ResultRow, ResultsWriter, measured_cell_ids, read_results, samples_from_text


def _row(cell_id: str, decode: float = 50.0, **extra: object) -> ResultRow:
    return ResultRow(
        suite="s",
        cell_id=cell_id,
        model_id="m|odd\nname",
        quantization="Q4_0",
        backend="llamacpp",
        device_id="cpu",
        threads=2,
        depth=0,
        decode_tok_s_mean=decode,
        decode_tok_s_samples="49.5;50.5",
        **extra,
    )


def test_rows_round_trip_with_types(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    writer = ResultsWriter(path)
    writer.append(_row("a", 51.25, unstable=True))
    writer.append(_row("b", status="skipped", reason="device cuda:0 absent"))
    frame = read_results([path])
    assert list(frame["cell_id"]) == ["a", "b"]
    assert frame["decode_tok_s_mean"].tolist()[0] == pytest.approx(51.25)
    assert frame["threads"].tolist() == [2, 2]
    assert frame["model_id"][0] == "m|odd\nname"  # quoting survives pipes and newlines
    assert frame["unstable"][0] is True
    assert samples_from_text(frame["decode_tok_s_samples"][0]) == [49.5, 50.5]
    assert path.read_text().splitlines()[0].split(",") == list(COLUMNS)


def test_partial_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    ResultsWriter(path).append(_row("a"))
    with path.open("a") as handle:
        handle.write("half,a,line")  # what a power cut mid-write could leave
    writer = ResultsWriter(path)
    writer.append(_row("b"))
    assert measured_cell_ids(path) == {"a", "b"}


def test_truncated_or_edited_csv_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    writer = ResultsWriter(path)
    writer.append(_row("a"))
    writer.append(_row("b"))
    lines = path.read_text().splitlines(keepends=True)
    lines[4] = lines[4].replace("llamacpp,", "llamacpp,extra,", 1)  # row b: its record starts on line 4
    path.write_text("".join(lines))
    with pytest.raises(BenchError, match=r"r\.csv:4: expected \d+ fields"):
        read_results([path])


def test_non_numeric_value_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    ResultsWriter(path).append(_row("a", 12.0))
    path.write_text(path.read_text().replace(",12,", ",fast,"))
    with pytest.raises(BenchError, match=r"r\.csv:2: column 'decode_tok_s_mean' holds 'fast'"):
        read_results([path])


def test_not_a_results_file(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(BenchError, match="not a bench results CSV"):
        read_results([path])
    with pytest.raises(BenchError, match="not found"):
        read_results([tmp_path / "missing.csv"])


def test_a_file_that_is_not_utf8_or_empty_gets_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    ResultsWriter(path).append(_row("a"))
    path.write_bytes(path.read_bytes().replace(b"Q4_0", b"Q4\xff0"))  # a byte no UTF-8 text holds, in a row
    with pytest.raises(BenchError, match=r"cannot read results file .*r\.csv: 'utf-8' codec"):
        read_results([path])
    path.write_bytes(b"\xffsuite,model_id,status\n")  # ... and in the header
    with pytest.raises(BenchError, match=r"cannot read results file .*r\.csv"):
        read_results([path])
    path.write_bytes(b" \n\n")
    with pytest.raises(BenchError, match="empty file"):
        read_results([path])


def test_writer_refuses_a_file_with_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("suite,model_id,status\ns,m,ok\n")
    with pytest.raises(BenchError, match="columns differ"):
        ResultsWriter(path)


@pytest.mark.parametrize(
    ("value", "missing"),
    [
        (None, True),
        (float("nan"), True),
        (np.float32("nan"), True),
        (pd.NA, True),
        (pd.NaT, True),
        ("", True),
        (0, False),
        (0.0, False),
        (" ", False),
        ("x", False),
        (False, False),
        ([], False),
        (10**400, False),
    ],
)
def test_one_test_for_a_missing_value(value: object, missing: bool) -> None:
    assert is_missing(value) is missing

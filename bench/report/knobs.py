"""Knob columns of result rows as the report shows them, all from the knob registry (bench.suite.knobs).

A knob registered there appears in configuration labels ('t2 kvq8_0', via `config_name`), table headers
(`Knob.label`) and cell text (`Knob.text`) with no edit here. Values are turned into text once per distinct
value of a column, never once per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.suite.knobs import KNOBS, Knob, config_name


def knob_names() -> tuple[str, ...]:
    """Every registered knob, in registry order (read at call time: a test may register one)."""
    return tuple(KNOBS)


def with_knob_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with a column for every registered knob (blank where an older CSV has none)."""
    missing = [name for name in KNOBS if name not in frame]
    if not missing:
        return frame
    blank = pd.DataFrame(None, index=frame.index, columns=missing, dtype=object)
    return pd.concat([frame, blank], axis=1)


def typed(knob: Knob, value: Any) -> Any:
    """A CSV cell (str, float, bool or missing) as the knob's own type; None when missing."""
    if fmt.is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if knob.type is bool:
        return value.strip().lower() in ("true", "on", "1") if isinstance(value, str) else bool(value)
    try:
        if knob.type is int:
            return int(float(value))
        if knob.type is float:
            return float(value)
    except ValueError:  # a hand-edited CSV: show what it says
        return str(value)
    return str(value)


def _per_value(column: pd.Series, describe: Callable[[Any], str]) -> pd.Series:
    """describe(value) for each row, computed once per distinct value ('' where missing)."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    texts = np.array([describe(value) for value in uniques] + [""], dtype=object)
    return pd.Series(texts[codes], index=column.index, dtype=object)  # code -1 picks the trailing ''


def _meaningless(frame: pd.DataFrame, knob: Knob) -> pd.Series:
    """Rows where the knob says nothing: a CPU device, for a knob whose value is forced there (offload)."""
    if knob.cpu_value is None or "device_kind" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["device_kind"].eq("cpu").fillna(False).astype(bool)


def knob_text(frame: pd.DataFrame, name: str) -> pd.Series:
    """The knob's values as table text ('all' for every GPU layer, ...); '' where missing or meaningless."""
    knob = KNOBS[name]
    text = _per_value(frame[name], lambda value: knob.text(typed(knob, value)))
    return text.where(~_meaningless(frame, knob), "")


def knob_label(frame: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """The configuration's short name from the knobs in `names` ('t2 nglall kvq8_0'); '' when none."""
    if not names or frame.empty:
        return pd.Series("", index=frame.index, dtype=object)
    pieces = []
    for name in names:
        knob = KNOBS[name]
        piece = _per_value(frame[name], lambda value, n=name, k=knob: config_name({n: typed(k, value)}, [n]))
        pieces.append(piece.where(~_meaningless(frame, knob), ""))
    joined = reduce(lambda a, b: a + " " + b, pieces)
    return joined.str.replace(r"\s+", " ", regex=True).str.strip()


def varying_knobs(frame: pd.DataFrame) -> list[str]:
    """The knobs that take more than one value in `frame` (the only ones labels need to mention)."""
    return [name for name in KNOBS if frame[name].nunique(dropna=False) > 1]


def is_numeric(name: str) -> bool:
    """Right-aligned in tables: the knob takes numbers."""
    return KNOBS[name].type in (int, float)


def label(name: str) -> str:
    return KNOBS[name].label

"""Numbers to table text, a whole column at a time: one precision and one unit per column."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.missing import is_missing
from bench.numbers import MISSING, decimals_each, numbers_text

GIB = 2**30
MIB = 2**20


def as_float(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype("float64")


def fixed(values: pd.Series, decimals: int | None = None, suffix: str = "") -> pd.Series:
    """Thousands separators and `decimals` decimals (default: 1, or 3 significant digits below 1)."""
    numbers = as_float(values).to_numpy()
    digits = decimals_each(numbers) if decimals is None else np.full(len(numbers), decimals)
    return pd.Series(numbers_text(numbers, digits, suffix), index=values.index, dtype=object)


def plus_minus(mean: pd.Series, spread: pd.Series, decimals: int | None = None) -> pd.Series:
    """'82.0 ± 4.9' (mean ± standard deviation at the mean's precision), or the mean without a spread."""
    means = as_float(mean).to_numpy()
    digits = decimals_each(means) if decimals is None else np.full(len(means), decimals)
    mean_text = pd.Series(numbers_text(means, digits), index=mean.index, dtype=object)
    spread_text = pd.Series(numbers_text(as_float(spread).to_numpy(), digits), index=mean.index, dtype=object)
    has_spread = as_float(spread).notna() & as_float(mean).notna()
    return mean_text.where(~has_spread, mean_text + " ± " + spread_text)


def integer(values: pd.Series) -> pd.Series:
    return fixed(values, 0)


def bytes_unit(values: pd.Series) -> tuple[str, float, int]:
    """(unit, divisor, decimals) for a byte column: GiB once its largest value reaches 10 GiB, else MiB."""
    largest = as_float(values).max()
    if not math.isnan(largest) and largest >= 10 * GIB:
        return "GiB", float(GIB), 1
    return "MiB", float(MIB), 0


def byte_column(values: pd.Series) -> tuple[str, pd.Series]:
    unit, divisor, decimals = bytes_unit(values)
    return unit, fixed(as_float(values) / divisor, decimals)


def _text_of(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def text(values: pd.Series) -> pd.Series:
    """Any column as display text ('' for missing); booleans as on/off. Each distinct value is turned into
    text once (a long history repeats the same hosts and models thousands of times)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    texts = np.array([_text_of(value) for value in uniques] + [""], dtype=object)
    return pd.Series(texts[codes], index=values.index, dtype=object)  # code -1 (missing) picks the last, ''


def tokens(value: float | int | None) -> str:
    """A context length as people say it: 4K, 32K, 128K (K = 1024), or the exact number."""
    if is_missing(value):
        return MISSING
    number = int(value)
    if number >= 1024 and number % 1024 == 0:
        return f"{number // 1024}K"
    return f"{number:,}"

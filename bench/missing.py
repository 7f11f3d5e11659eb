"""The one test for "no value", shared by every layer (a suite's cell ids, results, the report).

It imports nothing heavy: bench.suite reads cell ids from CSV values without loading pandas.
"""

from __future__ import annotations

import math
from typing import Any

# pandas' missing scalars, known by their type's name so that pandas need not be imported to recognise them.
_PANDAS_MISSING_TYPES = frozenset({"NAType", "NaTType"})


def is_missing(value: Any) -> bool:
    """None, NaN (Python's or numpy's), pandas' NA and NaT (an empty CSV field as pandas reads it), or empty
    text; anything else, a list or other non-number included, is a value."""
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    if type(value).__name__ in _PANDAS_MISSING_TYPES:
        return True
    try:
        return math.isnan(value)
    except (TypeError, ValueError, OverflowError):  # not a number (or an int too large for a float): a value
        return False

"""How bench writes a number for people: one precision rule for the report's tables and compare/trend alike."""

from __future__ import annotations

import math

import numpy as np

MISSING = "–"  # what a table shows where there is no value


def decimals_each(numbers: np.ndarray) -> np.ndarray:
    """Per value: one decimal from 1 up (82.0, 1,234.5: a tenth is what run-to-run comparisons quote);
    below 1, three significant digits up to 3 decimals (0.346, 0.0312 → 0.031)."""
    safe = np.abs(np.where(np.isfinite(numbers) & (numbers != 0), numbers, 1.0))
    small = np.clip(2 - np.floor(np.log10(safe)), 1, 3)
    return np.where(safe >= 1, 1, small).astype(int)


def numbers_text(numbers: np.ndarray, digits: np.ndarray | None = None, suffix: str = "") -> list[str]:
    """Each number with thousands separators and its digits (default: decimals_each), MISSING for NaN."""
    digits = decimals_each(numbers) if digits is None else digits
    return [
        MISSING if math.isnan(v) else f"{v:,.{d}f}{suffix}"
        for v, d in zip(numbers.tolist(), digits.tolist(), strict=True)
    ]


def number_text(value: float) -> str:
    """One number by the same rule."""
    return numbers_text(np.array([value], dtype="float64"))[0]

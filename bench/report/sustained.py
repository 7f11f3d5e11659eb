"""Sustained speed and energy per answer, from the rows' sustained-mode and energy columns.

    J per answer     = J per decode token × the thinking budget (tokens), gross and net of idle
    cost per answer  = $/h (bench.report.economics) × the budget's device time (budget / decode tok/s, all users) / 3600

The plot is bench.report.plots.sustained_plot.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.report import format as fmt
from bench.report.economics import hourly_cost
from bench.results import samples_from_text
from bench.suite import Suite


def sustained_rows(measured: pd.DataFrame) -> pd.DataFrame:
    """The rows with a sustained run (at least one window)."""
    if "sustain_tok_s_samples" not in measured:
        return measured.iloc[0:0]
    has = measured["sustain_tok_s_samples"].map(lambda text: bool(samples_from_text(text)))
    return measured[has.astype(bool)]


def energy_rows(measured: pd.DataFrame) -> pd.DataFrame:
    """The rows that measured energy per token."""
    return measured[fmt.as_float(measured["energy_j_per_decode_token"]).notna()]


def per_answer(rows: pd.DataFrame, budgets: list[int], suite: Suite | None) -> pd.DataFrame:
    """Per row and budget: `j_<budget>`, `net_j_<budget>` and `usd_<budget>` (NaN where an input is missing)."""
    gross = fmt.as_float(rows["energy_j_per_decode_token"])
    net = fmt.as_float(rows["energy_net_j_per_decode_token"])
    decode = fmt.as_float(rows["decode_tok_s_mean"])
    usd_per_hour = hourly_cost(rows, suite)["usd_per_hour"] if len(rows) else pd.Series(dtype=float)
    out = pd.DataFrame(index=rows.index)
    for budget in budgets:
        out[f"j_{budget}"] = gross * budget
        out[f"net_j_{budget}"] = net * budget
        out[f"usd_{budget}"] = usd_per_hour * budget / decode.where(decode > 0) / 3600.0
    return out


def throttle_text(seconds: pd.Series) -> pd.Series:
    """'after N s', or 'never' where speed never fell 5 % below burst."""
    values = fmt.as_float(seconds)
    return values.map(lambda s: "never" if math.isnan(s) else f"after {s:.0f} s")

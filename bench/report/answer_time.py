"""Time to answer: how long a setup takes to generate a reasoning trace of each thinking budget after the prompt.

From one user's decode speed (parallel 1 rows) at each measured depth, bench.stats.time_to_generate integrates
the time per token over the context positions the trace occupies, [prompt, prompt + budget], interpolating
linearly between measured depths and extending the nearest segment beyond them. Each result says how far it
reaches past the deepest measured depth, and whether only one depth was measured (its speed held constant).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.capacity import sequences, setup_columns
from bench.report.derived import noisy
from bench.results import select
from bench.stats import time_to_generate
from bench.suite import Suite


def thinking_budgets(suite: Suite | None) -> list[int]:
    """The suite's budgets, else the schema's default (one place decides it)."""
    if suite is not None:
        return list(suite.thinking_budgets)
    return list(Suite.model_fields["thinking_budgets"].get_default(call_default_factory=True))


def _one_setup(depths: np.ndarray, speeds: np.ndarray, start: float, budgets: list[int]) -> dict[str, object]:
    result: dict[str, object] = {}
    usable = np.isfinite(depths) & (speeds > 0)
    depths, speeds = depths[usable], speeds[usable]
    for budget in budgets:
        seconds, beyond = np.nan, np.nan
        if len(depths):
            seconds = time_to_generate(depths.tolist(), speeds.tolist(), start, budget)[0]
            beyond = max(0.0, start + budget - float(depths.max()))
        result[f"seconds_{budget}"] = seconds
        result[f"beyond_{budget}"] = beyond
    result["depths"] = ", ".join(f"{d:,.0f}" for d in sorted(depths))
    result["depth_count"] = len(depths)
    result["deepest"] = float(depths.max()) if len(depths) else np.nan
    result["starts_below"] = bool(len(depths)) and start < float(depths.min())
    return result


def answer_times(measured: pd.DataFrame, budgets: list[int], keep_all: bool) -> pd.DataFrame:
    """One row per setup (bench.report.capacity.setup_columns without depth) measured with one sequence:
    its identity columns, depths ('0, 16,384'), depth_count, deepest, starts_below (the prompt ends before
    the shallowest measured depth), noisy, and per budget B seconds_B and beyond_B (tokens past the deepest
    measured depth; 0 when inside)."""
    rows = select.newest_rows(measured).drop(columns=[select.CELL_KEY, select.MACHINE_KEY]) if keep_all else measured
    rows = rows[sequences(rows) == 1]
    if rows.empty:
        return pd.DataFrame()
    keys = [c for c in setup_columns() if c != "depth"]
    rows = rows.assign(
        _depth=fmt.as_float(rows["depth"]), _decode=fmt.as_float(rows["decode_tok_s_mean"]), _noisy=noisy(rows)
    )
    records = []
    for _, group in rows.groupby(keys, dropna=False, sort=True):
        group = group.sort_values("_depth", kind="stable").drop_duplicates("_depth", keep="last")
        first = group.iloc[0]
        start = float(np.nan_to_num(fmt.as_float(group["prompt_tokens"]).iloc[0]))
        figures = _one_setup(group["_depth"].to_numpy(), group["_decode"].to_numpy(), start, budgets)
        identity = {c: first[c] for c in (*keys, "device", "device_kind", "bits_per_weight") if c in group}
        records.append(identity | figures | {"noisy": bool(group["_noisy"].any())})
    return pd.DataFrame.from_records(records)

"""Time to answer: how long a setup takes to generate a reasoning trace of each thinking budget after the prompt.

From one user's decode speed (parallel 1 rows), placed at the context each row's decode started at
(bench.report.derived.decode_context: depth + prompt; the depth in rows written before decode followed the
prompt), bench.stats.time_to_generate integrates the time per token over the context positions the trace
occupies, [prompt, prompt + budget], interpolating linearly between measured contexts and extending the nearest
segment beyond them. Each result says how far it reaches past the deepest measured context, and whether only one
was measured (its speed held constant).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.capacity import setup_columns
from bench.report.derived import decode_context, noisy
from bench.report.users import sequences
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
    result["depths"] = ", ".join(f"{d:,.0f}" for d in depths)
    result["depth_count"] = len(depths)
    result["deepest"] = float(depths.max()) if len(depths) else np.nan
    result["starts_below"] = bool(len(depths)) and start < float(depths.min())
    return result


def answer_times(measured: pd.DataFrame, budgets: list[int], keep_all: bool) -> pd.DataFrame:
    """One row per setup (bench.report.capacity.setup_columns without depth) measured with one sequence:
    its identity columns, depths ('512, 16,896': the contexts its decodes started at), depth_count, deepest,
    starts_below (the prompt ends before the shallowest measured context), noisy, and per budget B seconds_B and
    beyond_B (tokens past the deepest measured context; 0 when inside)."""
    rows = select.newest_rows(measured).drop(columns=[select.CELL_KEY, select.MACHINE_KEY]) if keep_all else measured
    rows = rows[sequences(rows) == 1]
    if rows.empty:
        return pd.DataFrame()
    keys = [c for c in setup_columns() if c != "depth"]
    rows = rows.assign(
        _setup=rows.groupby(keys, dropna=False, sort=True).ngroup(),
        _depth=decode_context(rows),
        _decode=fmt.as_float(rows["decode_tok_s_mean"]),
        _noisy=noisy(rows),
    )
    # Sorted once, then each setup is a slice of plain arrays: a pandas groupby loop costs about a millisecond
    # per setup, which a 4,000-cell history would feel.
    rows = rows.sort_values(["_setup", "_depth"], kind="stable").drop_duplicates(["_setup", "_depth"], keep="last")
    setup = rows["_setup"].to_numpy()
    starts = np.flatnonzero(np.r_[True, setup[1:] != setup[:-1]])
    ends = np.r_[starts[1:], len(setup)]
    depths, decode = rows["_depth"].to_numpy(), rows["_decode"].to_numpy()
    prompt = np.nan_to_num(fmt.as_float(rows["prompt_tokens"]).to_numpy())
    figures = [
        _one_setup(depths[a:b], decode[a:b], float(prompt[a]), budgets) for a, b in zip(starts, ends, strict=True)
    ]
    identity = [c for c in (*keys, "device", "device_kind", "bits_per_weight") if c in rows]
    out = rows[identity].iloc[starts].reset_index(drop=True)
    out = pd.concat([out, pd.DataFrame.from_records(figures)], axis=1)
    out["noisy"] = rows["_noisy"].groupby(setup).any().to_numpy()
    return out

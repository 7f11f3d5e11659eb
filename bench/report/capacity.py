"""Capacity: how many users one setup serves at a service-level target (the suite's `slo`), per context depth.

A *setup* is a configuration without its `parallel` knob (machine, device, backend, model, quantization, the
other knobs, the workload), measured at one depth with several numbers of concurrent sequences N. A measured
N meets the SLO when the time to first token of the batch's last user (`ttft_ms_mean`: the batch's prefill)
is at most `max_ttft_ms` and each user's decode speed (`decode_tok_s_per_seq_mean`; aggregate / N in rows
written before that column) is at least `min_user_tok_s`. The capacity is the largest measured N such that it
and every smaller measured N meet the SLO: a measurement where 4 users fail and 16 pass counts 1, not 16,
since a box that fails 4 users cannot promise 16. Everything is computed on whole columns at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.data import config_columns
from bench.report.derived import noisy
from bench.report.economics import hourly_cost, usd_per_mtok
from bench.results import select
from bench.suite import Slo, Suite

SLO_FROM_SUITE = "the suite's slo"
SLO_DEFAULT = "the default preset: the suite declares no slo"
SLO_NO_SUITE = "the default preset: no suite given (pass --suite)"


@dataclass(frozen=True)
class Capacity:
    slo: Slo
    slo_source: str  # SLO_FROM_SUITE, SLO_DEFAULT or SLO_NO_SUITE
    table: pd.DataFrame  # one row per setup × depth; columns: see capacity_table


def default_slo() -> Slo:
    """The SLO a suite gets when it declares none (the schema's default: one place decides it)."""
    return Suite.model_fields["slo"].get_default(call_default_factory=True)


def slo_of(suite: Suite | None) -> tuple[Slo, str]:
    if suite is None:
        return default_slo(), SLO_NO_SUITE
    if "slo" in suite.model_fields_set:
        return suite.slo, SLO_FROM_SUITE
    return suite.slo, SLO_DEFAULT


def setup_columns() -> list[str]:
    """What a setup is: a configuration (bench.report.data.config_columns) without `parallel`, at one depth."""
    return [c for c in config_columns() if c != "parallel"] + ["depth"]


def sequences(frame: pd.DataFrame) -> pd.Series:
    """Concurrent sequences of each row; 1 for rows written before the `parallel` knob."""
    return fmt.as_float(frame["parallel"]).fillna(1.0) if "parallel" in frame else pd.Series(1.0, index=frame.index)


def user_tok_s(frame: pd.DataFrame) -> pd.Series:
    """Decode tok/s each user gets: the per-sequence column, else aggregate / sequences (lockstep decode)."""
    aggregate = fmt.as_float(frame["decode_tok_s_mean"]) / sequences(frame)
    if "decode_tok_s_per_seq_mean" not in frame:
        return aggregate
    return fmt.as_float(frame["decode_tok_s_per_seq_mean"]).fillna(aggregate)


def _failure(rows: pd.DataFrame, max_ttft: float | None, min_user: float | None) -> pd.Series:
    """Per row, what breaks the SLO ('' when it is met); a limit whose figure was not measured is broken."""
    parts = []
    if max_ttft is not None:
        ttft = rows["ttft_ms"]
        text = ("TTFT " + fmt.fixed(ttft, 0) + f" ms > {max_ttft:,.0f} ms").where(ttft.notna(), "TTFT not measured")
        parts.append(text.where(~(ttft <= max_ttft), ""))
    if min_user is not None:
        user = rows["user_tok_s"]
        text = (fmt.fixed(user) + f" tok/s per user < {min_user:g}").where(user.notna(), "decode not measured")
        parts.append(text.where(~(user >= min_user), ""))
    joined = pd.Series("", index=rows.index, dtype=object)
    for part in parts:
        joined = joined + np.where((joined != "") & (part != ""), " and ", "") + part
    return joined


def _users(count: pd.Series) -> pd.Series:
    return fmt.integer(count) + np.where(count == 1, " user", " users")


def capacity_table(measured: pd.DataFrame, suite: Suite | None, slo: Slo, keep_all: bool) -> pd.DataFrame:
    """One row per setup × depth (the first row's identity columns), with:
    measured_n ('1, 4, 16'), capacity (users; 0: not even the fewest measured), all_meet (every measured N
    meets it: the capacity is at least that), limit (what breaks the SLO at the next measured N, or why none
    does), decode_at_capacity (aggregate tok/s), user_tok_s_at_capacity, ttft_at_capacity, usd_per_mtok_at_capacity,
    decode_one_user and usd_per_mtok_one_user (the parallel-1 row's, NaN when not measured), noisy (a row that
    decides it was measured under system warnings)."""
    rows = select.newest_rows(measured).drop(columns=[select.CELL_KEY, select.MACHINE_KEY]) if keep_all else measured
    if rows.empty:
        return pd.DataFrame()
    max_ttft, min_user = slo.limits()
    keys = setup_columns()
    rows = rows.assign(
        n=sequences(rows),
        ttft_ms=fmt.as_float(rows["ttft_ms_mean"]),
        user_tok_s=user_tok_s(rows),
        decode=fmt.as_float(rows["decode_tok_s_mean"]),
        noisy=noisy(rows),
        usd_per_hour=hourly_cost(rows, suite)["usd_per_hour"],
    ).copy()  # one consolidated frame: the report's frames are wide, and each insert below would warn
    rows["setup_no"] = rows.groupby(keys, dropna=False, sort=True).ngroup()
    rows = rows.sort_values(["setup_no", "n"], kind="stable").drop_duplicates(["setup_no", "n"], keep="last")
    rows["failure"] = _failure(rows, max_ttft, min_user)
    served = (rows["failure"] == "").astype(int).groupby(rows["setup_no"]).cummin().astype(bool)
    by_setup = rows.groupby("setup_no", sort=True)
    out = by_setup.first()[
        [c for c in rows.columns if c in (*keys, "device", "device_kind", "bits_per_weight", "usd_per_hour")]
    ]
    out["measured_n"] = fmt.integer(rows["n"]).groupby(rows["setup_no"]).agg(", ".join)
    # Whole rows (drop_duplicates), not groupby.first/last: those take each column's first non-missing value.
    at_capacity = rows[served].drop_duplicates("setup_no", keep="last").set_index("setup_no")
    deciding = rows[~served].drop_duplicates("setup_no", keep="first").set_index("setup_no")
    out["capacity"] = at_capacity["n"].reindex(out.index).fillna(0.0)
    out["all_meet"] = ~out.index.isin(deciding.index)
    out["decode_at_capacity"] = at_capacity["decode"].reindex(out.index)
    out["user_tok_s_at_capacity"] = at_capacity["user_tok_s"].reindex(out.index)
    out["ttft_at_capacity"] = at_capacity["ttft_ms"].reindex(out.index)
    out["usd_per_mtok_at_capacity"] = usd_per_mtok(out["usd_per_hour"], out["decode_at_capacity"])
    one_user = rows[rows["n"] == 1].set_index("setup_no")["decode"].reindex(out.index)
    out["decode_one_user"] = one_user
    out["usd_per_mtok_one_user"] = usd_per_mtok(out["usd_per_hour"], one_user)
    largest = by_setup["n"].max()
    next_n = deciding["n"].reindex(out.index)
    fewest = by_setup["n"].min()
    limit = deciding["failure"].reindex(out.index).fillna("") + " at " + _users(next_n)
    none_served = out["capacity"] == 0
    fewest_text = np.where(fewest == 1, "not even 1 user", "not even " + _users(fewest) + " (the fewest measured)")
    limit = limit.where(~none_served, fewest_text + ": " + deciding["failure"].reindex(out.index).fillna(""))
    all_text = "all measured N meet it — capacity ≥ " + fmt.integer(largest)
    out["limit"] = limit.where(~out["all_meet"], all_text)
    decides = rows["n"] <= rows["setup_no"].map(next_n).fillna(np.inf)  # the rows up to the deciding one
    out["noisy"] = rows["noisy"].where(decides, False).groupby(rows["setup_no"]).any().reindex(out.index)
    return out.reset_index(drop=True)


def analyse_capacity(measured: pd.DataFrame, suite: Suite | None, keep_all: bool) -> Capacity:
    slo, source = slo_of(suite)
    return Capacity(slo=slo, slo_source=source, table=capacity_table(measured, suite, slo, keep_all))


def describe_slo(slo: Slo) -> str:
    """'TTFT ≤ 2,000 ms and ≥ 10 tok/s per user (mlperf-llama3.1-8b-server)'."""
    max_ttft, min_user = slo.limits()
    parts = [f"TTFT ≤ {max_ttft:,.0f} ms" if max_ttft else "", f"≥ {min_user:g} tok/s per user" if min_user else ""]
    text = " and ".join(p for p in parts if p)
    return f"{text} ({slo.preset})" if slo.preset else text

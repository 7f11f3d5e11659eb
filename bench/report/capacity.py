"""Burst capacity: how many users one setup serves at once at a service-level target (the suite's `slo`), per
context depth.

A *setup* is a configuration without its `parallel` knob (machine, device, backend, model, quantization, the
other knobs, the workload), measured at one depth with several numbers of concurrent sequences N. What is
measured is a burst: all N requests arrive together, each on top of `depth` tokens that are already cached (a
follow-up turn of a conversation, not a new one). A measured N meets the SLO when the SLO's percentile of time
to first token and of time per output token are within its limits (bench.report.slo_check: percentiles, not
means). A larger N that failed, timed out or was skipped (e.g. as not fitting in memory) breaks the SLO, with
its reason. The capacity is the largest N such that it and every smaller N meet the SLO: a measurement where 4
users fail and 16 pass counts 1, not 16, since a box that fails 4 users cannot promise 16. Everything is
computed on whole columns at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.data import config_columns, device_labels
from bench.report.derived import noisy
from bench.report.economics import busy_tok_s, hourly_cost, usd_per_mtok
from bench.report.slo_check import outcome_failure, slo_failure, slo_figures
from bench.report.users import sequences, user_tok_s, users_text
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


def _rows_to_judge(measured: pd.DataFrame, others: pd.DataFrame, keep_all: bool) -> pd.DataFrame:
    """The ok rows and the rows that did not measure (failed, timeout, skipped), newest per cell with keep_all."""
    others = others[others["status"] != "ok"]
    others = others.assign(device=device_labels(others)) if not others.empty else others
    rows = pd.concat([measured, others], ignore_index=True) if not others.empty else measured
    if keep_all:
        rows = select.newest_rows(rows).drop(columns=[select.CELL_KEY, select.MACHINE_KEY])
    return rows


def capacity_table(
    measured: pd.DataFrame, suite: Suite | None, slo: Slo, keep_all: bool, others: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per setup × depth with an ok row (the first row's identity columns), with:
    measured_n ('1, 4, 16'), capacity (users; 0: not even the fewest measured), all_meet (every measured N
    meets it: the capacity is at least that), limit (what breaks the SLO at the next N, or why none does),
    decode_at_capacity (aggregate tok/s), user_tok_s_at_capacity (mean per user), ttft_pct_at_capacity and
    user_tok_s_pct_at_capacity (the SLO's percentiles), usd_per_mtok_at_capacity, decode_one_user and
    usd_per_mtok_one_user (the parallel-1 row's, NaN when not measured), noisy (a row that decides it was
    measured under system warnings). `others`: rows of any status; a failed, timed-out or skipped N breaks it."""
    rows = _rows_to_judge(measured, others if others is not None else measured.iloc[:0], keep_all)
    if rows.empty or not (rows["status"] == "ok").any():
        return pd.DataFrame()
    keys = setup_columns()
    ok = (rows["status"] == "ok").to_numpy()
    figures = slo_figures(rows, slo)
    added = pd.DataFrame(
        {
            "n": sequences(rows),
            "user_tok_s": user_tok_s(rows),
            "decode": fmt.as_float(rows["decode_tok_s_mean"]),
            "noisy": noisy(rows),
            "usd_per_hour": hourly_cost(rows, suite)["usd_per_hour"],  # each row's own power, not its setup's first
            "failure": outcome_failure(rows).where(~ok, slo_failure(figures, slo)),
            **figures,
        },
        index=rows.index,
    )
    # Joined in one concat: the report's frames are wide, and a column inserted at a time fragments them (and
    # pandas warns on the user's terminal).
    rows = pd.concat([rows.drop(columns=[c for c in added if c in rows]), added], axis=1).copy()
    rows["usd_per_mtok"] = usd_per_mtok(rows["usd_per_hour"], busy_tok_s(rows))
    rows["setup_no"] = rows.groupby(keys, dropna=False, sort=True).ngroup()
    rows = rows[rows["setup_no"].isin(rows.loc[ok, "setup_no"])]  # setups with nothing measured are not shown
    rows = rows.sort_values(["setup_no", "n"], kind="stable").drop_duplicates(["setup_no", "n"], keep="last")
    served = (rows["failure"] == "").astype(int).groupby(rows["setup_no"]).cummin().astype(bool)
    by_setup = rows.groupby("setup_no", sort=True)
    identity = [
        c for c in rows.columns if c in (*keys, "device", "device_kind", "bits_per_weight", "usd_per_hour", "served_by")
    ]
    out = rows[rows["status"] == "ok"].drop_duplicates("setup_no").set_index("setup_no")[identity].sort_index()
    out["measured_n"] = fmt.integer(rows["n"]).groupby(rows["setup_no"]).agg(", ".join)
    # Whole rows (drop_duplicates), not groupby.first/last: those take each column's first non-missing value.
    at_capacity = rows[served].drop_duplicates("setup_no", keep="last").set_index("setup_no")
    deciding = rows[~served].drop_duplicates("setup_no", keep="first").set_index("setup_no")
    out["capacity"] = at_capacity["n"].reindex(out.index).fillna(0.0)
    out["all_meet"] = ~out.index.isin(deciding.index)
    for column, source in (
        ("decode_at_capacity", "decode"),
        ("user_tok_s_at_capacity", "user_tok_s"),
        ("ttft_pct_at_capacity", "ttft_pct_ms"),
        ("user_tok_s_pct_at_capacity", "user_tok_s_pct"),
    ):
        out[column] = at_capacity[source].reindex(out.index)
    out["usd_per_mtok_at_capacity"] = at_capacity["usd_per_mtok"].reindex(out.index)
    one_user = rows[(rows["n"] == 1) & (rows["status"] == "ok")].set_index("setup_no").reindex(out.index)
    out["decode_one_user"] = one_user["decode"]
    out["usd_per_mtok_one_user"] = one_user["usd_per_mtok"]
    out["limit"] = _limit_text(out, by_setup, deciding)
    decides = rows["n"] <= rows["setup_no"].map(deciding["n"]).fillna(np.inf)  # the rows up to the deciding one
    out["noisy"] = rows["noisy"].where(decides, False).groupby(rows["setup_no"]).any().reindex(out.index)
    return out.reset_index(drop=True)


def _limit_text(out: pd.DataFrame, by_setup: Any, deciding: pd.DataFrame) -> pd.Series:
    """What breaks the SLO at the N that breaks it ('… at 16 users'), or why nothing does."""
    failure = deciding["failure"].reindex(out.index).fillna("")
    next_n = deciding["n"].reindex(out.index)
    fewest = by_setup["n"].min().reindex(out.index)
    limit = failure + " at " + users_text(next_n)
    fewest_text = np.where(fewest == 1, "not even 1 user", "not even " + users_text(fewest) + " (the fewest measured)")
    limit = limit.where(out["capacity"] != 0, fewest_text + ": " + failure)
    all_text = "every measured N meets it — capacity ≥ " + fmt.integer(by_setup["n"].max().reindex(out.index))
    return limit.where(~out["all_meet"], all_text + " (a larger N was not measured)")


def analyse_capacity(
    measured: pd.DataFrame, suite: Suite | None, keep_all: bool, others: pd.DataFrame | None = None
) -> Capacity:
    slo, source = slo_of(suite)
    return Capacity(slo=slo, slo_source=source, table=capacity_table(measured, suite, slo, keep_all, others))


def describe_slo(slo: Slo) -> str:
    """'TTFT ≤ 2,000 ms and ≥ 10 tok/s per user (mlperf-llama3.1-8b-server)'."""
    max_ttft, min_user = slo.limits()
    parts = [f"TTFT ≤ {max_ttft:,.0f} ms" if max_ttft else "", f"≥ {min_user:g} tok/s per user" if min_user else ""]
    text = " and ".join(p for p in parts if p) + f", both at p{slo.percentile}"
    return f"{text} ({slo.preset})" if slo.preset else text


def slo_misses_per_config(measured: pd.DataFrame, configs: pd.DataFrame, slo: Slo) -> pd.Series:
    """Per configuration (index of `configs`), why its N > 1 concurrent users are not served at the SLO at some
    measured depth ('16 users at once miss the SLO at depth 0: …'); '' for one sequence, or when they are."""
    rows = measured[sequences(measured) > 1]
    if rows.empty:
        return pd.Series("", index=configs.index, dtype=object)
    failure = slo_failure(slo_figures(rows, slo), slo)
    text = users_text(sequences(rows)) + " at once miss the SLO at depth " + fmt.integer(rows["depth"]) + ": " + failure
    failing = pd.DataFrame({"config_no": rows["config_no"], "depth": fmt.as_float(rows["depth"]), "text": text})
    failing = failing[failure != ""].sort_values(["config_no", "depth"], kind="stable").drop_duplicates("config_no")
    by_config = failing.set_index("config_no")["text"]
    return configs["config_no"].map(by_config).fillna("").astype(object)

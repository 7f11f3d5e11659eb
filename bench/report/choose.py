"""Recommendations: which configurations meet the suite's constraints, and which is best.

Each constraint is checked for every configuration at once and leaves a reason where it fails
("decode 41.2 tok/s at depth 4096 < 60 required"), so the report can say what rules each option
out. A constraint on something that was not measured rules the option out too (it cannot be shown
to pass). A configuration serving N > 1 sequences at once is an option only where each of its users gets
the SLO (bench.report.slo_check) at every measured depth: its aggregate speed is a throughput, and its cost per
token is only real while the users are served. Eligible options are ranked by cost per million tokens when every
one of them has a cost (a throughput question: all users' tokens), otherwise by decode speed per user (a
one-user question); ties go to lower quality loss, then lower memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.capacity import setup_columns
from bench.report.users import USER_DECODE, sequences
from bench.suite import GB, Constraints

CONSTRAINT_TEXT = {
    "min_decode_tok_s": "decode ≥ {} tok/s per user at every measured depth",
    "max_kld": "mean KLD ≤ {} vs the baseline",
    "max_ppl_increase_pct": "perplexity increase ≤ {} % vs the baseline",
    "min_context": "fits a context of ≥ {} tokens",
    "max_memory_gb": "peak memory ≤ {} GB",
    "min_task_accuracy": "task accuracy ≥ {} %",
}


@dataclass(frozen=True)
class CapacityPick:
    """The setup serving the most users at the SLO at every measured depth, and the figures that say so."""

    device: str
    setup: str  # the configuration's label at that many sequences
    users: int
    at_least: bool  # every measured N met the SLO at every depth: the capacity may be higher
    depths: str  # '0, 16,384'
    limiting_depth: float  # the depth where the fewest users are served (the deepest such)
    decode_tok_s: float  # aggregate decode there
    usd_per_mtok: float  # cost per million tokens there (NaN: no cost declared)

    @property
    def reason(self) -> str:
        more = " (every measured N met it: the capacity may be higher)" if self.at_least else ""
        cost = f", ${self.usd_per_mtok:,.3f} per million tokens" if not np.isnan(self.usd_per_mtok) else ""
        return (
            f"{self.users:,} {'user' if self.users == 1 else 'users'} at the SLO at every measured depth "
            f"({self.depths}){more}; at {self.limiting_depth:,.0f}, the depth that limits it, "
            f"{self.decode_tok_s:,.1f} tok/s for all users together{cost}; its configuration at {self.users:,} "
            "sequences meets the constraints"
        )


@dataclass
class Recommendation:
    constraints: dict[str, float]
    ranking: str
    table: pd.DataFrame  # configs + eligible, reasons, rank (1 = best; NaN when ruled out)
    best_per_device: pd.DataFrame = field(default_factory=pd.DataFrame)
    most_users: CapacityPick | None = None

    @property
    def best(self) -> pd.Series | None:
        ranked = self.table[self.table["rank"] == 1]
        return None if ranked.empty else ranked.iloc[0]


def _check(values: pd.Series, limit: float, at_least: bool, unmeasured: str, failed: pd.Series) -> pd.Series:
    """Reason text where the check fails ('' where it passes)."""
    missing = values.isna()
    bad = (values < limit) if at_least else (values > limit)
    reasons = pd.Series("", index=values.index, dtype=object)
    reasons = reasons.where(~missing, unmeasured)
    return reasons.where(~(bad & ~missing), failed)


def constraint_reasons(configs: pd.DataFrame, constraints: Constraints) -> pd.DataFrame:
    """One column of reasons per declared constraint."""
    reasons: dict[str, pd.Series] = {}
    c = constraints
    if c.min_decode_tok_s is not None:
        worst = configs["decode_worst"]
        reasons["min_decode_tok_s"] = _check(
            worst,
            c.min_decode_tok_s,
            True,
            "decode speed not measured",
            "decode "
            + fmt.fixed(worst, 1)
            + " tok/s per user at depth "
            + fmt.integer(configs["decode_worst_depth"])
            + f" < {c.min_decode_tok_s:g} required",
        )
    if c.max_kld is not None:
        reasons["max_kld"] = _check(
            configs["kld"],
            c.max_kld,
            False,
            "KLD not measured",
            "KLD " + fmt.fixed(configs["kld"], 4) + f" > {c.max_kld:g} allowed",
        )
    if c.max_ppl_increase_pct is not None:
        reasons["max_ppl_increase_pct"] = _check(
            configs["dppl_pct"],
            c.max_ppl_increase_pct,
            False,
            "perplexity not measured",
            "ΔPPL " + fmt.fixed(configs["dppl_pct"], 2) + f" % > {c.max_ppl_increase_pct:g} % allowed",
        )
    if c.min_context is not None:
        fits = _check(
            configs["max_context"],
            c.min_context,
            True,
            "context fit unknown (no planner estimate)",
            "memory fits " + fmt.integer(configs["max_context"]) + f" tokens < {c.min_context:,} required",
        )
        supported = fmt.as_float(configs["model_context"])
        short = supported.notna() & (supported < c.min_context)
        model_reason = "model supports " + fmt.integer(supported) + f" tokens < {c.min_context:,} required"
        reasons["min_context"] = fits.where(~short | (fits != ""), model_reason)
    if c.max_memory_gb is not None:
        memory_gb = configs["memory_bytes"] / GB
        reasons["max_memory_gb"] = _check(
            memory_gb,
            c.max_memory_gb,
            False,
            "peak memory not measured",
            "memory " + fmt.fixed(memory_gb, 2) + f" GB > {c.max_memory_gb:g} allowed",
        )
    if c.min_task_accuracy is not None:
        accuracy = fmt.as_float(configs["task_accuracy_pct"])
        reasons["min_task_accuracy"] = _check(
            accuracy,
            c.min_task_accuracy,
            True,
            "task accuracy not measured",
            "task accuracy " + fmt.fixed(accuracy, 1) + f" % < {c.min_task_accuracy:g} % required",
        )
    return pd.DataFrame(reasons, index=configs.index)


def recommend(
    configs: pd.DataFrame,
    constraints: Constraints | None,
    quality_column: str | None,
    slo_misses: pd.Series | None = None,
) -> Recommendation:
    """`slo_misses`: per configuration, why its N > 1 users are not served at the SLO ('' when they are; see
    bench.report.capacity.slo_misses_per_config)."""
    constraints = constraints or Constraints()
    declared = {k: v for k, v in constraints.model_dump().items() if v is not None}
    reasons = constraint_reasons(configs, constraints)
    if slo_misses is not None:
        reasons["slo"] = slo_misses.reindex(configs.index).fillna("")
    table = configs.copy()
    table["reasons"] = reduce(
        lambda a, b: a + "; " + b,
        (reasons[c] for c in reasons.columns),
        pd.Series("", index=table.index, dtype=object),
    )
    table["reasons"] = table["reasons"].str.replace(r"(; )+", "; ", regex=True).str.strip("; ")
    table["eligible"] = table["reasons"] == ""
    eligible = table[table["eligible"]]
    by_cost = not eligible.empty and eligible["usd_per_mtok"].notna().all()
    ranking = "lowest cost per million tokens (all users' tokens)" if by_cost else "highest decode tok/s per user"
    quality = table[quality_column] if quality_column else pd.Series(np.nan, index=table.index)
    order = (
        pd.DataFrame(
            {
                "primary": table["usd_per_mtok"] if by_cost else -fmt.as_float(table[USER_DECODE]),
                "quality": quality,
                "memory": table["memory_bytes"],
                "setup": table["setup"],
                "device": table["device"],
            }
        )
        .loc[eligible.index]
        .sort_values(["primary", "quality", "memory", "device", "setup"], na_position="last")
    )
    table["rank"] = np.nan
    table.loc[order.index, "rank"] = np.arange(1, len(order) + 1, dtype=float)
    ranked = table.loc[order.index]
    best_per_device = ranked.drop_duplicates("device", keep="first").sort_values("device")
    return Recommendation(constraints=declared, ranking=ranking, table=table, best_per_device=best_per_device)


def most_users(capacity: pd.DataFrame, options: pd.DataFrame) -> CapacityPick | None:
    """The setup with the largest capacity over all its measured depths (the fewest users any depth serves),
    among those whose configuration at that many sequences is eligible in `options` (recommend's table).
    Ties: more aggregate decode at the limiting depth, then lower cost there, then device and label."""
    if capacity.empty or options.empty:
        return None
    keys = [c for c in setup_columns() if c != "depth"]
    setup = capacity.groupby(keys, dropna=False, sort=False).ngroup()
    frame = capacity.assign(_setup=setup, _depth=fmt.as_float(capacity["depth"]))
    by_depth = frame.sort_values(["_setup", "_depth"], kind="stable")
    depths = fmt.integer(by_depth["_depth"]).groupby(by_depth["_setup"]).agg(", ".join)
    all_meet = frame["all_meet"].astype(bool).groupby(setup).all()
    worst = frame.sort_values(["_setup", "capacity", "_depth"], ascending=[True, True, False], kind="stable")
    worst = worst.drop_duplicates("_setup").assign(
        depths=lambda w: w["_setup"].map(depths), all_meet=lambda w: w["_setup"].map(all_meet)
    )
    worst = worst[worst["capacity"] > 0]
    eligible = options[options["eligible"]].assign(capacity=sequences(options[options["eligible"]]))
    joined = worst.merge(eligible[[*keys, "capacity", "setup"]], on=[*keys, "capacity"], how="inner")
    if joined.empty:
        return None
    ordered = joined.assign(
        _decode=-fmt.as_float(joined["decode_at_capacity"]), _cost=fmt.as_float(joined["usd_per_mtok_at_capacity"])
    ).sort_values(["capacity", "_decode", "_cost", "device", "setup"], ascending=[False, True, True, True, True])
    best = ordered.iloc[0]
    return CapacityPick(
        device=str(best["device"]),
        setup=str(best["setup"]),
        users=int(best["capacity"]),
        at_least=bool(best["all_meet"]),
        depths=str(best["depths"]),
        limiting_depth=float(best["_depth"]),
        decode_tok_s=float(best["decode_at_capacity"]),
        usd_per_mtok=float(best["usd_per_mtok_at_capacity"]),
    )

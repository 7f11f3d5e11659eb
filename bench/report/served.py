"""Served capacity (the report's figures for rows of a `load` profile): per load point its arrival rate, goodput
and whether it meets the SLO; per setup the largest sustainable rate and what it gives.

    arrival rate   = the rate the point's schedule offered (load_rate_rps); a closed-loop or all-at-once point
                     has none and is placed at its measured request throughput (what arrived, in steady state)
    goodput        = measured requests meeting every SLO limit (TTFT <= max_ttft_ms and time per output token
                     <= 1000 / min_user_tok_s, each request on its own) per second of the point's window: the
                     row's goodput_rps (under its slo_* limits), computed for rows from before it was kept
    meets the SLO  = TTFT and time per output token at the SLO's percentile within its limits, no failed or
                     incomplete request, and a client that kept its schedule (client_limited false)
    sustainable    = the largest arrival rate that meets it with every lower measured rate of the setup meeting
                     it too; a capacity search's row (capacity_rps) gives its own answer
    users          = sustainable rate x mean time a request spends (Little's law)
    $ per 1M tok   = the device's cost per hour / (output tok/s at that rate x 3600) x 1,000,000
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.report.economics import hourly_cost, usd_per_mtok
from bench.report.knobs import knob_label
from bench.results import samples_from_text
from bench.stats import goodput_rps as stats_goodput
from bench.suite import Slo, Suite

LOAD = "load"  # the server backend's load-profile knob: rows with a value are load points
SETUP = "served_setup"


def is_load_point(frame: pd.DataFrame) -> pd.Series:
    if LOAD not in frame:
        return pd.Series(False, index=frame.index)
    return frame[LOAD].fillna("").astype(str).ne("")


def goodput_rps(ttft_ms: str, tpot_ms: str, span_s: float, slo: Slo) -> float:
    """Requests meeting every limit of the SLO per second (bench.stats.goodput_rps over the row's per-request
    samples); NaN without a window or for a row from before tpot_ms_samples (not aligned)."""
    max_ttft, min_user = slo.limits()
    max_tpot = 1000.0 / min_user if min_user is not None else None
    return stats_goodput(samples_from_text(ttft_ms), samples_from_text(tpot_ms), span_s, max_ttft, max_tpot)


def _meets(points: pd.DataFrame, slo: Slo) -> pd.Series:
    p = slo.percentile
    max_ttft, min_user = slo.limits()
    ok = pd.Series(True, index=points.index)
    if max_ttft is not None:
        ok &= fmt.as_float(points[f"ttft_ms_p{p}"]) <= max_ttft
    if min_user is not None:
        ok &= fmt.as_float(points[f"tpot_ms_p{p}"]) <= 1000.0 / min_user
    failed = fmt.as_float(points["request_errors"]).fillna(0) + fmt.as_float(points["requests_incomplete"]).fillna(0)
    limited = points["client_limited"].astype(str).str.lower().isin(["true", "1"])
    return ok & failed.eq(0) & ~limited


def served_points(measured: pd.DataFrame, knobs: list[str], slo: Slo) -> pd.DataFrame:
    """The load-point rows with: served_setup (the setup's label without the load knobs), arrival_rps,
    goodput_rps and meets_slo; sorted by setup and arrival rate."""
    points = measured[is_load_point(measured)].copy()
    if points.empty:
        return points
    setting_knobs = [k for k in knobs if not k.startswith(LOAD) and k in points]
    model = fmt.text(points["model_id"]) + " " + fmt.text(points["quantization"])
    points[SETUP] = (model + " " + knob_label(points, setting_knobs)).str.strip()
    offered = fmt.as_float(points["load_rate_rps"])
    points["arrival_rps"] = offered.fillna(fmt.as_float(points["request_throughput_rps"]))
    # A row's own goodput_rps (measured under the limits in its slo_* columns) where it has one; computed from
    # its samples under the suite's slo for a row from before it was kept.
    stored = fmt.as_float(points["goodput_rps"]) if "goodput_rps" in points else pd.Series(np.nan, index=points.index)
    computed = [
        goodput_rps(t, p, s, slo) if math.isnan(g) else g
        for t, p, s, g in zip(
            points["ttft_ms_samples"],
            points["tpot_ms_samples"],
            fmt.as_float(points["load_span_s"]),
            stored,
            strict=True,
        )
    ]
    points["goodput_rps"] = computed
    points["meets_slo"] = _meets(points, slo)
    return points.sort_values(["device", SETUP, "arrival_rps"], kind="stable")


def _sustainable(group: pd.DataFrame) -> pd.Series | None:
    """The setup's point at its largest arrival rate meeting the SLO with every lower rate meeting it (None: the
    lowest did not); a capacity search's row, placed at its capacity_rps, where that is larger."""
    ordered = group[group["capacity_rps"].isna()].sort_values("arrival_rps", kind="stable")
    prefix = ordered["meets_slo"].astype(bool).cummin()
    candidates = [ordered[prefix].iloc[-1]] if prefix.any() else []
    searched = group[fmt.as_float(group["capacity_rps"]) > 0]
    candidates += [row.copy() for _, row in searched.assign(arrival_rps=searched["capacity_rps"]).iterrows()]
    return max(candidates, key=lambda r: float(r["arrival_rps"])) if candidates else None


def served_capacity(points: pd.DataFrame, burst: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Per (device, setup): rate_rps (largest sustainable at the SLO), goodput_rps, output_tok_s and users there,
    usd_per_mtok at that rate, points (how many measured), and burst_users (the Capacity section's burst
    capacity of the same device, model, quantization and backend at its shallowest depth, NaN where none)."""
    columns = ["device", SETUP, "rate_rps", "goodput_rps", "output_tok_s", "users", "usd_per_mtok", "points"]
    if points.empty:
        return pd.DataFrame(columns=[*columns, "burst_users"])
    rows = []
    for (device, setup), group in points.groupby(["device", SETUP], sort=True):
        at = _sustainable(group)
        rate = float(at["arrival_rps"]) if at is not None else np.nan
        rows.append(
            {
                "device": device,
                SETUP: setup,
                "rate_rps": rate,
                "goodput_rps": float(at["goodput_rps"]) if at is not None else np.nan,
                "output_tok_s": float(at["decode_tok_s_mean"]) if at is not None else np.nan,
                "users": rate * float(at["e2e_ms_mean"]) / 1000.0 if at is not None else np.nan,
                "points": len(group),
                **{k: group[k].iloc[0] for k in ("host", "device_id", "avg_power_w", "model_id", "quantization")},
                "backend": group["backend"].iloc[0],
            }
        )
    table = pd.DataFrame(rows)
    hourly = hourly_cost(table, suite)["usd_per_hour"]
    table["usd_per_mtok"] = usd_per_mtok(hourly, fmt.as_float(table["output_tok_s"]))
    keys = ["device", "model_id", "quantization", "backend"]
    if burst.empty or not set(keys) <= set(burst):
        table["burst_users"] = np.nan
    else:
        shallow = burst.sort_values("depth", kind="stable").drop_duplicates(keys)[[*keys, "capacity"]]
        table = table.merge(shallow.rename(columns={"capacity": "burst_users"}), on=keys, how="left")
    return table

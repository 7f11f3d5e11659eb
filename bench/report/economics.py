"""What a token costs: amortized hardware plus electricity, per device, from the suite's `costs`.

    hardware $/h   = price_usd / (amortization_years × 8766 h × utilization)
    electricity $/h = power_w / 1000 × electricity_usd_per_kwh
    $ per 1M tokens = (hardware $/h + electricity $/h) / (decode tok/s × 3600) × 1,000,000

`costs` keys are device ids (every machine's device of that id) or HOST/DEVICE-ID (one machine's).
Power is the declared `power_w` (whole-system draw); without it, the measured average device power.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.suite import Suite

HOURS_PER_YEAR = 8766.0  # 365.25 days
COST_FORMULA = (
    "cost per million tokens = (hardware $/h + electricity $/h) / (decode tok/s × 3600) × 1,000,000, where "
    "hardware $/h = price_usd / (amortization_years × 8766 h × utilization) and "
    "electricity $/h = power_w / 1000 × electricity_usd_per_kwh"
)


def device_cost_table(frame: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Per (host, device_id) in `frame`: declared cost inputs (NaN where not declared) and the $/h parts."""
    devices = frame[["host", "device_id", "device"]].drop_duplicates(["host", "device_id"]).reset_index(drop=True)
    columns = ["price_usd", "power_w", "electricity_usd_per_kwh", "amortization_years", "utilization"]
    values = np.full((len(devices), len(columns)), np.nan)
    declared = np.zeros(len(devices), dtype=bool)
    costs = suite.costs if suite is not None else {}
    for position, (host, device_id) in enumerate(zip(devices["host"], devices["device_id"], strict=True)):
        cost = costs.get(f"{host}/{device_id}") or costs.get(str(device_id))
        if cost is not None:
            declared[position] = True
            values[position] = [np.nan if getattr(cost, c) is None else getattr(cost, c) for c in columns]
    table = pd.concat([devices, pd.DataFrame(values, columns=columns)], axis=1)
    table["declared"] = declared
    table["hardware_usd_per_h"] = table["price_usd"] / (
        table["amortization_years"] * HOURS_PER_YEAR * table["utilization"]
    )
    return table


def hourly_cost(frame: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Per row of `frame` (host, device_id, device, avg_power_w): `usd_per_hour` (NaN where no cost is declared)
    and `power_w` (the declared whole-system power; NaN where none)."""
    table = device_cost_table(frame, suite)
    joined = (
        frame[["host", "device_id"]]
        .merge(table.drop(columns="device"), on=["host", "device_id"], how="left")
        .set_index(frame.index)
    )
    power = joined["power_w"].fillna(fmt.as_float(frame["avg_power_w"]).where(joined["declared"]))
    electricity_per_h = power / 1000.0 * joined["electricity_usd_per_kwh"]
    hourly = joined["hardware_usd_per_h"].fillna(0.0) + electricity_per_h.fillna(0.0)
    known = joined["declared"].fillna(False).astype(bool) & (
        joined["hardware_usd_per_h"].notna() | electricity_per_h.notna()
    )
    return pd.DataFrame({"usd_per_hour": hourly.where(known), "power_w": joined["power_w"]}, index=frame.index)


def usd_per_mtok(usd_per_hour: pd.Series, decode_tok_s: pd.Series) -> pd.Series:
    """Cost per million decoded tokens at this decode speed (aggregate over the sequences served at once)."""
    decode = fmt.as_float(decode_tok_s)
    return (usd_per_hour / (decode * 3600.0) * 1e6).where(usd_per_hour.notna() & (decode > 0))


def add_costs(configs: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Cost per million decoded tokens, and tokens per joule (from declared power when not measured)."""
    hourly = hourly_cost(configs, suite)
    decode = fmt.as_float(configs["decode_tok_s_mean"])
    out = configs.copy()
    out["usd_per_hour"] = hourly["usd_per_hour"]
    out["usd_per_mtok"] = usd_per_mtok(hourly["usd_per_hour"], decode)
    declared_power = hourly["power_w"]
    estimated = out["tok_per_j"].isna() & declared_power.notna() & (declared_power > 0)
    out["tok_per_j_estimated"] = estimated
    out["tok_per_j"] = out["tok_per_j"].where(~estimated, decode / declared_power)
    return out

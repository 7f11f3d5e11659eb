"""What a token costs: amortized hardware plus electricity, per device, from the suite's `costs`.

    hardware $/h   = price_usd / (amortization_years × 8766 h × utilization)
    electricity $/h = power_w / 1000 × electricity_usd_per_kwh
    busy s per request = prompt_tokens / prefill tok/s + gen_tokens / decode tok/s   (a request's device time)
    $ per 1M tokens = (hardware $/h + electricity $/h) / (gen_tokens / busy s × 3600) × 1,000,000

The device is busy with a request's prompt as well as its generated tokens, so both are paid for (the depth
is already cached: a follow-up turn). With N sequences at once the rates are the aggregates, and the tokens
are every user's. `costs` keys are device ids (every machine's device of that id) or HOST/DEVICE-ID (one
machine's). Power is the declared `power_w` (whole-system draw); without it, each row's measured average
device power (a GPU's board power), else none: the report warns where a priced device has no `power_w`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.suite import Suite

HOURS_PER_YEAR = 8766.0  # 365.25 days
COST_FORMULA = (
    "cost per million tokens = (hardware $/h + electricity $/h) / (generated tok per busy second × 3600) × "
    "1,000,000, where a request keeps the device busy for prompt_tokens / prefill tok/s + gen_tokens / decode "
    "tok/s, hardware $/h = price_usd / (amortization_years × 8766 h × utilization) and "
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


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return fmt.as_float(frame[name]) if name in frame else pd.Series(np.nan, index=frame.index)


def busy_tok_s(frame: pd.DataFrame) -> pd.Series:
    """Generated tokens per second of device time: each request's prompt at the prefill rate and its generated
    tokens at the decode rate (aggregates over the sequences served at once). NaN where a rate is missing."""
    prompt, gen = _column(frame, "prompt_tokens").fillna(0.0), _column(frame, "gen_tokens")
    prefill, decode = _column(frame, "prefill_tok_s_mean"), _column(frame, "decode_tok_s_mean")
    prefill_s = (prompt / prefill.where(prefill > 0)).where(prompt > 0, 0.0)
    busy_s = prefill_s + gen / decode.where(decode > 0)
    return gen / busy_s.where(busy_s > 0)


def usd_per_mtok(usd_per_hour: pd.Series, tok_s: pd.Series) -> pd.Series:
    """Cost per million generated tokens at this rate of tokens per busy second (bench.report.economics)."""
    rate = fmt.as_float(tok_s)
    return (usd_per_hour / (rate * 3600.0) * 1e6).where(usd_per_hour.notna() & (rate > 0))


def missing_power(table: pd.DataFrame) -> pd.DataFrame:
    """The priced devices (device_cost_table's rows) with no declared `power_w`: their electricity is a measured
    GPU board power where a row has one, else nothing. Columns: device."""
    return table[table["declared"] & table["power_w"].isna()][["device"]]


def add_costs(configs: pd.DataFrame, suite: Suite | None) -> pd.DataFrame:
    """Cost per million generated tokens (prompt and generation time paid), and tokens per joule (from declared
    power when not measured)."""
    hourly = hourly_cost(configs, suite)
    decode = fmt.as_float(configs["decode_tok_s_mean"])
    out = configs.copy()
    out["usd_per_hour"] = hourly["usd_per_hour"]
    out["usd_per_mtok"] = usd_per_mtok(hourly["usd_per_hour"], busy_tok_s(configs))
    declared_power = hourly["power_w"]
    estimated = out["tok_per_j"].isna() & declared_power.notna() & (declared_power > 0)
    out["tok_per_j_estimated"] = estimated
    out["tok_per_j"] = out["tok_per_j"].where(~estimated, decode / declared_power)
    return out

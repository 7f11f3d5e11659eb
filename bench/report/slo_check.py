"""Whether one measured row serves its users at the SLO, judged as the SLO is defined: on a percentile.

MLPerf's limits are 99th percentiles, over requests, of each request's time to first token and time per output
token, so a row is judged on the same percentile (`slo.percentile`, 99 unless the suite says otherwise) of each
user's figures, never on a mean:
- time to first token: the percentile of `ttft_ms_per_seq_samples`, every sequence's TTFT in every repetition
  (a sequence's first token comes when the prefill batch holding its last prompt token is done);
- time per output token: the percentile of `tpot_ms_per_seq_samples`, every sequence's (last token - first
  token) / (output tokens - 1) in every repetition.
Rows written before those samples were kept fall back to what they carry, each at least as strict: TTFT to the
repetitions' `ttft_ms_samples` (the whole batched prefill: the last user's first token), time per output token to
`tpot_ms_p{P}` (a served row's percentile over requests), else `itl_ms_p{P}` (the percentile over every decode
step). A figure the row does not carry at all is named as unknown and the row does not meet the SLO: a
percentile is never replaced by a mean. Whole columns at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.report import format as fmt
from bench.results import samples_from_text
from bench.stats import percentile
from bench.suite import Slo


def sample_percentile(texts: pd.Series, pct: float) -> pd.Series:
    """The percentile of each row's ';'-separated samples (NaN where it has none)."""
    values = [samples_from_text(text) for text in texts.to_numpy()]
    return pd.Series([percentile(v, pct) if v else np.nan for v in values], index=texts.index, dtype=float)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return fmt.as_float(frame[name]) if name in frame else pd.Series(np.nan, index=frame.index)


def _samples(frame: pd.DataFrame, name: str) -> pd.Series:
    return frame[name] if name in frame else pd.Series("", index=frame.index)


def slo_figures(rows: pd.DataFrame, slo: Slo) -> pd.DataFrame:
    """Per row: ttft_pct_ms (the SLO's percentile of each user's TTFT), tpot_pct_ms (of each user's time per
    output token) and user_tok_s_pct (1000 / tpot_pct_ms: the per-user speed that percentile of users reaches)."""
    pct = slo.percentile
    ttft = sample_percentile(_samples(rows, "ttft_ms_per_seq_samples"), pct)
    ttft = ttft.fillna(sample_percentile(_samples(rows, "ttft_ms_samples"), pct))
    tpot = sample_percentile(_samples(rows, "tpot_ms_per_seq_samples"), pct)
    tpot = tpot.fillna(_column(rows, f"tpot_ms_p{pct}")).fillna(_column(rows, f"itl_ms_p{pct}"))
    return pd.DataFrame(
        {"ttft_pct_ms": ttft, "tpot_pct_ms": tpot, "user_tok_s_pct": 1000.0 / tpot.where(tpot > 0)},
        index=rows.index,
    )


def _joined(parts: list[pd.Series], index: pd.Index) -> pd.Series:
    joined = pd.Series("", index=index, dtype=object)
    for part in parts:
        joined = joined + np.where((joined != "") & (part != ""), " and ", "") + part
    return joined


def slo_failure(figures: pd.DataFrame, slo: Slo) -> pd.Series:
    """Per row (slo_figures' columns), what breaks the SLO ('' when it is met). A limit whose percentile the row
    cannot give is broken, and says why."""
    max_ttft, min_user = slo.limits()
    p = f"p{slo.percentile}"
    parts = []
    if max_ttft is not None:
        ttft = figures["ttft_pct_ms"]
        text = ("TTFT " + p + " " + fmt.fixed(ttft, 0) + f" ms > {max_ttft:,.0f} ms").where(
            ttft.notna(), f"TTFT {p} unknown (no per-repetition TTFT samples)"
        )
        parts.append(text.where(~(ttft <= max_ttft), ""))
    if min_user is not None:
        max_tpot = 1000.0 / min_user
        tpot, user = figures["tpot_pct_ms"], figures["user_tok_s_pct"]
        text = (
            "time per token "
            + p
            + " "
            + fmt.fixed(tpot)
            + f" ms > {max_tpot:,.1f} ms ("
            + fmt.fixed(user)
            + f" tok/s per user < {min_user:g})"
        ).where(tpot.notna(), f"time per token {p} unknown (no per-user samples, no tpot_ms_{p} or itl_ms_{p})")
        parts.append(text.where(~(tpot <= max_tpot * (1 + 1e-9)), ""))  # 1e-9: 1000 / 10 is 100 ms exactly
    return _joined(parts, figures.index)


def outcome_failure(rows: pd.DataFrame) -> pd.Series:
    """For rows that did not measure (failed, timeout, skipped): 'failed: <reason>' ('' for ok rows)."""
    status = rows["status"].astype(str)
    reason = rows["reason"].astype(object).where(rows["reason"].notna(), "").astype(str)
    text = status + np.where(reason != "", ": " + reason, "")
    return pd.Series(np.where(status == "ok", "", text), index=rows.index, dtype=object)

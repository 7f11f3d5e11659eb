"""Statistics as pure functions: summaries of repetitions, spread, instability, significance."""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# A coefficient of variation above this flags a cell as unstable (pyperf warns at 10%; we are stricter
# because tok/s comparisons in procurement decisions are often within 10%). The one place it is set:
# runs, report, compare, export and trend all read it from here.
UNSTABLE_CV_PCT = 5.0

# The false-discovery rate `bench compare` controls across all cells x metrics of one comparison.
DEFAULT_FDR_PCT = 5.0


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    median: float
    cv_pct: float

    @property
    def unstable(self) -> bool:
        return self.n > 1 and self.cv_pct > UNSTABLE_CV_PCT


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("summarize() needs at least one value")
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    cv = 100.0 * std / mean if mean else 0.0
    return Summary(n=len(values), mean=mean, std=std, median=statistics.median(values), cv_pct=cv)


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (numpy's default method), pct in [0, 100]."""
    if not values:
        raise ValueError("percentile() needs at least one value")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def goodput_rps(
    ttft_ms: Sequence[float],
    tpot_ms: Sequence[float],
    span_s: float,
    max_ttft_ms: float | None,
    max_tpot_ms: float | None,
) -> float:
    """Requests meeting every SLO limit per second of a window: per request (the two sequences aligned) its TTFT
    and its time per output token (NaN for a one-token answer: it meets that limit); a limit None is not
    checked. NaN without a window or when the sequences are not aligned."""
    if not span_s or not math.isfinite(span_s) or span_s <= 0 or len(ttft_ms) != len(tpot_ms):
        return math.nan
    ttft, tpot = np.asarray(ttft_ms, dtype=float), np.asarray(tpot_ms, dtype=float)
    meets = np.ones(len(ttft), dtype=bool)
    if max_ttft_ms is not None:
        meets &= ttft <= max_ttft_ms
    if max_tpot_ms is not None:
        meets &= np.isnan(tpot) | (tpot <= max_tpot_ms)
    return float(meets.sum()) / span_s


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it takes about 1.4 s to import (measured with -X importtime on the
    2-core dev machine), and every measurement worker imports this module for summarize() alone."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class TTest:
    """A t statistic of (current - baseline) with its degrees of freedom; one-sided p-values from the exact
    Student t distribution (scipy), so 31 degrees of freedom give 2.04 at 97.5 %, not the normal 1.96."""

    t: float
    dof: float

    @property
    def p_greater(self) -> float:
        """P(T >= t) under 'no change': small when current is significantly above the baseline."""
        return float(_scipy_stats().t.sf(self.t, self.dof))

    @property
    def p_less(self) -> float:
        """P(T <= t) under 'no change': small when current is significantly below the baseline."""
        return float(_scipy_stats().t.cdf(self.t, self.dof))


def _t_ratio(diff: float, standard_error: float) -> float:
    """diff / standard_error where a spread of zero means any difference is certain (and none is none)."""
    if standard_error > 0:
        return diff / standard_error
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def welch_t_test(baseline: Sequence[float], current: Sequence[float]) -> TTest | None:
    """Welch's unequal-variance t-test of mean(current) - mean(baseline); None when either side has fewer
    than two values (no spread to judge noise by). Degrees of freedom by Welch-Satterthwaite."""
    if len(baseline) < 2 or len(current) < 2:
        return None
    a, b = summarize(baseline), summarize(current)
    var_a, var_b = a.std**2 / a.n, b.std**2 / b.n
    t = _t_ratio(b.mean - a.mean, math.sqrt(var_a + var_b))
    if var_a + var_b == 0:
        return TTest(t=t, dof=float(a.n + b.n - 2))
    dof_terms = (var_a**2 / (a.n - 1) if var_a else 0.0) + (var_b**2 / (b.n - 1) if var_b else 0.0)
    return TTest(t=t, dof=(var_a + var_b) ** 2 / dof_terms)


def prediction_t_test(history: Sequence[float], new: float) -> TTest | None:
    """Is `new` a draw from the population `history` was drawn from? The prediction-interval t statistic
    (new - mean) / (s * sqrt(1 + 1/n)) with n - 1 degrees of freedom (normal population, unknown variance).
    None with fewer than two values in `history`."""
    if len(history) < 2:
        return None
    past = summarize(history)
    return TTest(t=_t_ratio(new - past.mean, past.std * math.sqrt(1 + 1 / past.n)), dof=float(past.n - 1))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values): rejecting every hypothesis with q <= alpha keeps
    the expected share of false discoveries among the rejections at or below alpha (independent or
    positively dependent tests)."""
    if not p_values:
        return []
    return [float(q) for q in _scipy_stats().false_discovery_control(np.asarray(p_values, dtype=float), method="bh")]


def median_ratio_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the median and its distribution-free confidence interval from order statistics
    ([x_(j), x_(n-j+1)] with j from the binomial(n, 1/2) quantile), so no normality is assumed."""
    from scipy.stats import binom

    if not values:
        raise ValueError("median_ratio_interval() needs at least one value")
    ordered = sorted(values)
    n = len(ordered)
    j = max(1, int(binom.ppf((1 - confidence) / 2, n, 0.5)))
    return statistics.median(ordered), ordered[j - 1], ordered[n - j]


def time_to_generate(
    depths: Sequence[float], tok_s: Sequence[float], start: float, tokens: float
) -> tuple[float, bool]:
    """(seconds, extrapolated): the time to decode `tokens` tokens one after another from context depth
    `start`, from decode speeds measured at `depths`.

    Time per token is interpolated linearly in depth between measured depths (each token attends over the
    whole cache, so its cost grows about linearly with depth) and integrated exactly over
    [start, start + tokens]. Outside the measured range the nearest segment's line is extended (a single
    depth: held constant), and `extrapolated` says so."""
    if not depths or len(depths) != len(tok_s) or any(v <= 0 for v in tok_s):
        raise ValueError("time_to_generate() needs positive speeds at one or more depths")
    points = sorted(zip(depths, (1.0 / v for v in tok_s), strict=True))
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    end = start + tokens

    def line(at: float) -> tuple[float, float]:
        """(slope, intercept) of the segment that covers depth `at` (extended at both ends)."""
        if len(xs) == 1:
            return 0.0, ys[0]
        i = min(max(bisect.bisect_right(xs, at) - 1, 0), len(xs) - 2)
        slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
        return slope, ys[i] - slope * xs[i]

    cuts = [start, *(x for x in xs if start < x < end), end]
    seconds = 0.0
    for low, high in zip(cuts, cuts[1:], strict=False):
        slope, intercept = line((low + high) / 2)
        seconds += slope * (high * high - low * low) / 2 + intercept * (high - low)
    return seconds, start < xs[0] or end > xs[-1] or len(xs) == 1

"""Statistics as pure functions: summaries of repetitions, spread, instability, significance."""
from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# A coefficient of variation above this flags a cell as unstable (pyperf warns at 10%; we are stricter
# because tok/s comparisons in procurement decisions are often within 10%).
UNSTABLE_CV_PCT = 5.0


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


# Two-sided 95% Student t critical values by degrees of freedom; beyond 30 the normal value is close enough.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 25: 2.060, 30: 2.042}


def t_critical_95(dof: int) -> float:
    if dof < 1:
        return math.inf
    keys = [k for k in sorted(_T95) if k <= dof]
    return _T95[keys[-1]] if dof <= 30 else 1.960




@dataclass(frozen=True)
class WelchTest:
    """Welch's unequal-variance t-test of mean(current) - mean(baseline), two-sided at 95%."""

    t: float
    dof: float
    critical: float

    @property
    def significant(self) -> bool:
        return abs(self.t) > self.critical


def welch_t_test(baseline: Sequence[float], current: Sequence[float]) -> WelchTest | None:
    """None when either side has fewer than two values (no spread to judge noise by).

    Degrees of freedom by Welch-Satterthwaite, rounded down to the table's next lower entry, so the
    critical value errs towards "within noise". Two sides without any spread differ significantly
    exactly when their means differ.
    """
    if len(baseline) < 2 or len(current) < 2:
        return None
    a, b = summarize(baseline), summarize(current)
    var_a, var_b = a.std**2 / a.n, b.std**2 / b.n
    diff = b.mean - a.mean
    if var_a + var_b == 0:
        return WelchTest(t=0.0 if diff == 0 else math.copysign(math.inf, diff), dof=a.n + b.n - 2, critical=0.0)
    dof_terms = (var_a**2 / (a.n - 1) if var_a else 0.0) + (var_b**2 / (b.n - 1) if var_b else 0.0)
    dof = (var_a + var_b) ** 2 / dof_terms
    return WelchTest(t=diff / math.sqrt(var_a + var_b), dof=dof, critical=t_critical_95(math.floor(dof)))


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


def time_to_generate(depths: Sequence[float], tok_s: Sequence[float], start: float,
                     tokens: float) -> tuple[float, bool]:
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

"""Pareto fronts: which configurations no other one beats on both axes at once.

A configuration is dominated when another is at least as good on both axes and better on one.
Two axes allow an O(n log n) sweep: sort by the first axis (best first); a point is dominated
exactly when a point before it is at least as good on the second axis (and better somewhere).
Along the front, the second axis then only improves as the first worsens, so the front point
named as dominating a configuration is found by binary search: the best on the first axis among
front points at least as good on the second — "as good in quality, and faster" reads naturally.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_2d(higher_better: np.ndarray, lower_better: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(on_front, dominator) for each point; dominator is an index into the input, -1 when on the front.

    NaN in either axis: not on the front and no dominator (the point was not measured on that axis).
    """
    count = len(higher_better)
    on_front = np.zeros(count, dtype=bool)
    dominator = np.full(count, -1, dtype=np.int64)
    valid = np.flatnonzero(~(np.isnan(higher_better) | np.isnan(lower_better)))
    if valid.size == 0:
        return on_front, dominator
    order = valid[np.lexsort((lower_better[valid], -higher_better[valid]))]  # best x first, then best y
    xs, ys = higher_better[order], lower_better[order]
    previous_best = np.concatenate(([np.inf], np.minimum.accumulate(ys)[:-1]))
    # Equal y before this point dominates it unless that point is an exact duplicate (same x too).
    first_of_x = np.concatenate(([True], xs[1:] != xs[:-1]))
    run_start = np.maximum.accumulate(np.where(first_of_x, np.arange(len(xs)), 0))
    best_before_run = np.concatenate(([np.inf], np.minimum.accumulate(ys)))[run_start]
    dominated = (previous_best < ys) | (best_before_run <= ys)
    on_front[order] = ~dominated
    front = order[~dominated]  # fastest first; its y strictly improves along it
    front_y = lower_better[front]
    first_good_enough = np.searchsorted(-front_y, -ys[dominated], side="left")
    dominator[order[dominated]] = front[first_good_enough]
    return on_front, dominator


def fronts_by_group(frame: pd.DataFrame, group: str, higher_better: str, lower_better: str) -> pd.DataFrame:
    """Pareto membership within each group (e.g. per model): on_front, dominated_by (a frame index)."""
    on_front = pd.Series(False, index=frame.index)
    dominated_by = pd.Series(-1, index=frame.index, dtype="int64")
    for _, members in frame.groupby(group, sort=False, dropna=False):
        front, dominator = pareto_2d(
            pd.to_numeric(members[higher_better], errors="coerce").to_numpy(float),
            pd.to_numeric(members[lower_better], errors="coerce").to_numpy(float),
        )
        on_front.loc[members.index] = front
        dominated_by.loc[members.index] = np.where(
            dominator >= 0, members.index.to_numpy()[np.maximum(dominator, 0)], -1
        )
    return pd.DataFrame({"on_front": on_front, "dominated_by": dominated_by.astype("Int64").mask(dominated_by < 0)})

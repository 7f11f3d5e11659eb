"""Read, merge and analyse results once: the `Analysis` every section turns into blocks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.report import data as report_data
from bench.report.capacity import Capacity, analyse_capacity, slo_misses_per_config
from bench.report.choose import Recommendation, most_users, recommend
from bench.report.context import add_context_fits
from bench.report.economics import add_costs
from bench.report.frontier import fronts_by_group
from bench.report.served import is_load_point, served_capacity, served_points
from bench.report.synthetic import mark_synthetic_models
from bench.report.users import USER_DECODE
from bench.results import read_results
from bench.runners.registry import quantization_catalog
from bench.suite import Suite, load_suite


@dataclass
class Analysis:
    data: report_data.ReportData
    recommendation: Recommendation
    capacity: Capacity
    served_points: pd.DataFrame  # load points (bench.report.served), empty when no `load` profile was measured
    served: pd.DataFrame  # per setup: the largest sustainable rate at the SLO and what it gives


def _add_fronts(configs: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """Per model, Pareto fronts on (decode per user, quality loss) and (memory, quality loss), or (decode per user,
    memory): a front answers what one user gets."""
    out = configs.copy()
    out["neg_memory"] = -out["memory_bytes"]
    if metric is None:
        speed = fronts_by_group(out, "model_id", USER_DECODE, "memory_bytes")
        out["front_speed"], out["dominated_speed"] = speed["on_front"], speed["dominated_by"]
        out["front_memory"], out["dominated_memory"] = speed["on_front"], speed["dominated_by"]
        return out
    loss = report_data.QUALITY_LOSS_COLUMN[metric]
    speed = fronts_by_group(out, "model_id", USER_DECODE, loss)
    memory = fronts_by_group(out, "model_id", "neg_memory", loss)
    out["front_speed"], out["dominated_speed"] = speed["on_front"], speed["dominated_by"]
    out["front_memory"], out["dominated_memory"] = memory["on_front"], memory["dominated_by"]
    return out


def analyse(frame: pd.DataFrame, keep_all: bool, suite: Suite | None) -> Analysis:
    input_rows = len(frame)
    sources = report_data.sources_table(frame)
    rows = report_data.normalize(report_data.merge_newest(frame, keep_all))  # merge first: fewer rows to normalize
    rows = mark_synthetic_models(rows)  # "model ˢ": synthetic weights, kept apart from the model's real rows
    measured, knobs = report_data.derive(rows[rows["status"] == "ok"], suite, keep_all)
    configs = report_data.headline(measured)
    metric = report_data.quality_metric(configs)
    configs = add_context_fits(add_costs(configs, suite))
    configs = _add_fronts(configs, metric)
    loss_column = report_data.QUALITY_LOSS_COLUMN[metric] if metric else None
    # Burst capacity is `parallel` users arriving together: load points (requests over time) have their own.
    capacity = analyse_capacity(measured[~is_load_point(measured)], suite, keep_all, rows)
    points = served_points(measured, knobs, capacity.slo)
    slo_misses = slo_misses_per_config(measured, configs, capacity.slo)
    recommendation = recommend(configs, suite.constraints if suite else None, loss_column, slo_misses)
    recommendation.most_users = most_users(capacity.table, recommendation.table)
    data = report_data.ReportData(
        rows=rows,
        measured=measured,
        configs=configs,
        sources=sources,
        input_rows=input_rows,
        keep_all=keep_all,
        suite=suite,
        quality_metric=metric,
        knobs=knobs,
    )
    return Analysis(
        data=data,
        recommendation=recommendation,
        capacity=capacity,
        served_points=points,
        served=served_capacity(points, capacity.table, suite),
    )


def load_report_data(results: list[Path], keep_all: bool = False, suite_path: Path | None = None) -> Analysis:
    suite = load_suite(suite_path, quantization_catalog()) if suite_path else None
    return analyse(read_results(results, skip=report_data.UNREAD_COLUMNS), keep_all, suite)

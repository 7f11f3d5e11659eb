"""The plan stage in one call: select (shard, filters) -> availability (with each cell's weights) -> memory
estimates -> the suite's limit on a cell's estimated time."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from bench.hardware import Fingerprint
from bench.plan.availability import plan_cells
from bench.plan.memory import with_memory
from bench.plan.planned import PlannedCell
from bench.plan.select import select_filters, select_shard
from bench.plan.time_estimate import device_rates, duration_text, estimate_cell_times
from bench.suite import Suite, expand


def plan_suite(
    suite: Suite,
    fingerprint: Fingerprint,
    *,
    shard: tuple[int, int] | None = None,
    filters: list[tuple[str, str]] | None = None,
    done: Collection[str] = (),
    force: bool = False,
) -> list[PlannedCell]:
    """The suite's cells chosen by shard and filters, less the ids in `done` (a resumed file's), each runnable or
    skipped with its reason, with its memory estimate; cells that will not fit are skipped unless `force`, and
    cells estimated to take longer than `limits.max_cell_estimate_minutes` are skipped with their estimate.

    Selection comes first, so availability probes and memory estimates run for the chosen cells only.
    """
    cells = expand(suite)
    if shard:
        cells = select_shard(cells, shard)
    if filters:
        cells = select_filters(cells, filters)
    if done:
        cells = [cell for cell in cells if cell.cell_id not in done]
    planned = with_memory(suite, plan_cells(suite, fingerprint, cells), fingerprint, force=force)
    return without_long_cells(suite, fingerprint, planned)


def without_long_cells(suite: Suite, fingerprint: Fingerprint, planned: list[PlannedCell]) -> list[PlannedCell]:
    """Cells whose estimated time (the planner's model of this machine, bench.plan.time_estimate) exceeds
    `limits.max_cell_estimate_minutes` become skipped, their estimate in the reason. The model's estimate, not
    past results: `bench plan` and `bench run` then leave out the same cells."""
    limit = suite.limits.max_cell_estimate_minutes
    if limit is None:
        return planned
    times = estimate_cell_times(planned, rates=device_rates(suite, fingerprint))
    out = []
    for item in planned:
        time = times.get(item.cell_id)
        if item.runnable and time is not None and time.seconds > limit * 60:
            reason = f"estimated {duration_text(time.seconds)} > limits.max_cell_estimate_minutes {limit:g}"
            item = replace(item, skip_reason=reason)
        out.append(item)
    return out

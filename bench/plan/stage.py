"""The plan stage in one call: select (shard, filters) -> availability -> memory estimates."""

from __future__ import annotations

from collections.abc import Collection

from bench.hardware import Fingerprint
from bench.plan.availability import plan_cells
from bench.plan.memory import with_memory
from bench.plan.planned import PlannedCell
from bench.plan.select import select_filters, select_shard
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
    skipped with its reason, with its memory estimate; cells that will not fit are skipped unless `force`.

    Selection comes first, so availability probes and memory estimates run for the chosen cells only.
    """
    cells = expand(suite)
    if shard:
        cells = select_shard(cells, shard)
    if filters:
        cells = select_filters(cells, filters)
    if done:
        cells = [cell for cell in cells if cell.cell_id not in done]
    return with_memory(suite, plan_cells(suite, fingerprint, cells), fingerprint, force=force)

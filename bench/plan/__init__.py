"""Planning: which of a suite's cells run on this machine, what memory each needs, how long the run takes.

planned.py        PlannedCell: a cell, runnable or skipped with its reason, with its memory estimate
select.py         --shard and --only: which cells a run takes
availability.py   backend installed, device present and usable, model reference valid
memory.py         each backend's memory planner, asked for its cells (estimates by cell id)
time_estimate.py  seconds per cell, from past results or a bandwidth/FLOP model
stage.py          select -> availability (weights: real or synthetic) -> memory -> time limit, in one call
view.py           the summary `bench plan` shows (rich renderables); listing.py: every cell, JSON, CSV
"""

from __future__ import annotations

from bench.plan.availability import plan_cells
from bench.plan.memory import memory_by_cell, with_memory
from bench.plan.planned import PlannedCell
from bench.plan.select import parse_filters, parse_shard, select_filters, select_shard
from bench.plan.stage import plan_suite
from bench.plan.time_estimate import CellTime, DeviceRate, device_rates, estimate_cell_seconds, estimate_cell_times

__all__ = [
    "CellTime",
    "DeviceRate",
    "PlannedCell",
    "device_rates",
    "estimate_cell_seconds",
    "estimate_cell_times",
    "memory_by_cell",
    "parse_filters",
    "parse_shard",
    "plan_cells",
    "plan_suite",
    "select_filters",
    "select_shard",
    "with_memory",
]

"""The memory stage of a plan: each backend's memory planner (BackendSpec.plan_memory), asked for its cells.

`memory_by_cell` returns estimates by cell id and changes nothing; `with_memory` makes new planned cells
carrying them, skipping (unless forced) those that will not fit. The estimate types are backend-neutral
(bench.runners.memory), so nothing here knows which backend made an estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bench.hardware import Fingerprint
from bench.plan.planned import PlannedCell
from bench.runners.memory import Budget, CellMemory, MemoryEstimate, ModelFacts, device_budget
from bench.runners.registry import backend
from bench.suite import Suite

__all__ = ["Budget", "CellMemory", "MemoryEstimate", "ModelFacts", "device_budget", "memory_by_cell", "with_memory"]


def memory_by_cell(suite: Suite, planned: Sequence[PlannedCell], fingerprint: Fingerprint) -> dict[str, CellMemory]:
    """Every planned cell's memory estimate by cell id, on the weights the plan chose for it; a backend without
    a memory planner gets a note saying so."""
    by_backend: dict[str, list[PlannedCell]] = {}
    for item in planned:
        by_backend.setdefault(item.cell.backend, []).append(item)
    estimates: dict[str, CellMemory] = {}
    for name, group in by_backend.items():
        planner = backend(name).plan_memory
        if planner is None:
            note = CellMemory(note=f"no memory estimate: the {name} backend has no memory planner")
            estimates.update((item.cell_id, note) for item in group)
        else:
            synthetic = frozenset(item.cell_id for item in group if item.weights is not None and item.weights.synthetic)
            estimates.update(planner([item.cell for item in group], suite, fingerprint, None, synthetic))
    return estimates


def with_memory(
    suite: Suite, planned: Sequence[PlannedCell], fingerprint: Fingerprint, force: bool = False
) -> list[PlannedCell]:
    """Each planned cell with its memory estimate; runnable cells that will not fit become skipped (unless
    force)."""
    estimates = memory_by_cell(suite, planned, fingerprint)
    out = []
    for item in planned:
        memory = estimates[item.cell_id]
        reason = item.skip_reason or ("" if force else memory.skip_reason())
        out.append(replace(item, skip_reason=reason, memory=memory))
    return out

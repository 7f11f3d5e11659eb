"""A planned cell: a cell of the matrix, runnable or skipped with a reason, with its memory estimate."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.models.weights import WeightsChoice
from bench.runners.memory import CellMemory
from bench.suite import Cell


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    skip_reason: str = ""
    memory: CellMemory | None = None  # the backend's memory planner's estimate (bench.plan.memory)
    # The cell's id, read once: Cell.cell_id is a pydantic private attribute, slow to read 10,000 times over.
    cell_id: str = field(default="", repr=False, compare=False)
    weights: WeightsChoice | None = None  # real or synthetic weights, and why (bench.models.weights)

    def __post_init__(self) -> None:
        if not self.cell_id:  # (dataclasses.replace passes it on)
            object.__setattr__(self, "cell_id", self.cell.cell_id)

    def row_fields(self) -> dict[str, Any]:
        """What the plan knows of the cell's row: memory estimates and which weights it uses."""
        fields: dict[str, Any] = self.memory.row_fields() if self.memory else {}
        if self.weights is not None:
            fields.update(self.weights.row_fields())
        return fields

    @property
    def runnable(self) -> bool:
        return not self.skip_reason

    @property
    def status(self) -> str:
        """run | will not fit | skipped: what `bench run` will do with the cell."""
        if self.runnable:
            return "run"
        return "will not fit" if self.skip_reason.startswith("will not fit") else "skipped"

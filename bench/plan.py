"""Plan: the suite's cells on this machine, each runnable or skipped with a reason."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.hardware import Fingerprint, device_available
from bench.runners import backend_missing_reason
from bench.suite import AXES, Cell, Suite, expand

if TYPE_CHECKING:
    from bench.planner import CellMemory


@dataclass
class PlannedCell:
    cell: Cell
    skip_reason: str = ""
    memory: CellMemory | None = None  # the memory planner's estimate (bench.planner.plan_memory)

    @property
    def runnable(self) -> bool:
        return not self.skip_reason


def plan_cells(suite: Suite, fingerprint: Fingerprint) -> list[PlannedCell]:
    planned = []
    backend_reasons = {b: backend_missing_reason(b) for b in suite.backends}
    for cell in expand(suite):
        reason = backend_reasons[cell.backend]
        if not reason:
            ok, why = device_available(fingerprint, cell.device_kind, cell.device_index, cell.backend)
            reason = "" if ok else why
        planned.append(PlannedCell(cell, reason))
    torch_cells = [p.cell for p in planned if p.runnable and p.cell.backend == "torch"]
    torch_reasons = _torch_quantization_reasons(torch_cells)
    for item in planned:
        if item.runnable and item.cell.backend == "torch":
            cell = item.cell
            item.skip_reason = torch_reasons[(cell.device_kind, cell.device_index, cell.quantization)]
    return planned


def _torch_quantization_reasons(cells: list[Cell]) -> dict[tuple[str, int, str], str]:
    """Why a device cannot run a torch quantization (e.g. fp16 or int4 on some CPUs); '' where it can.

    A real check (a small layer at each quantization, in a subprocess), once per device and only when
    the suite has runnable torch cells.
    """
    wanted: dict[tuple[str, int], set[str]] = {}
    for cell in cells:
        wanted.setdefault((cell.device_kind, cell.device_index), set()).add(cell.quantization)
    if not wanted:
        return {}
    from bench.runners.torch import quantization_skip_reasons

    reasons: dict[tuple[str, int, str], str] = {}
    for (kind, index), quantizations in wanted.items():
        for quantization, reason in quantization_skip_reasons(kind, index, sorted(quantizations)).items():
            reasons[(kind, index, quantization)] = reason
    return reasons


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 1 <= i <= n."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise BenchError(f"--shard {text!r}: expected i/n, e.g. 1/3") from None
    if not 1 <= index <= count:
        raise BenchError(f"--shard {text!r}: i must be between 1 and n")
    return index, count


def select_shard(cells: list[PlannedCell], shard: tuple[int, int]) -> list[PlannedCell]:
    """A deterministic slice by model load group, so each shard loads each model once.

    Groups are ordered by their identity (not by suite order or host), dealt round-robin.
    """
    index, count = shard
    groups: dict[tuple[object, ...], list[PlannedCell]] = {}
    for planned in cells:
        groups.setdefault(planned.cell.load_key(), []).append(planned)
    ordered = sorted(groups, key=lambda key: repr(key))
    chosen = {key for position, key in enumerate(ordered) if position % count == index - 1}
    return [p for p in cells if p.cell.load_key() in chosen]


def parse_filters(filters: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for text in filters:
        field, sep, pattern = text.partition("=")
        field = {"quant": "quantization"}.get(field.strip(), field.strip())
        if not sep or not pattern:
            raise BenchError(f"--only {text!r}: expected field=value, e.g. quant=Q4_K_M or threads=2")
        if field not in AXES:
            raise BenchError(f"--only {text!r}: unknown field {field!r}; allowed: {', '.join(AXES)}")
        parsed.append((field, pattern.strip()))
    return parsed


def select_filters(cells: list[PlannedCell], filters: list[tuple[str, str]]) -> list[PlannedCell]:
    """Keep cells matching every filter (values may use shell wildcards; comma = any of)."""
    def matches(cell: Cell) -> bool:
        for field, pattern in filters:
            value = str(cell.axis_value(field))
            if not any(fnmatch.fnmatchcase(value, option) for option in pattern.split(",")):
                return False
        return True

    return [p for p in cells if matches(p.cell)]

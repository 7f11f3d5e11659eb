"""Plan: the suite's cells on this machine, each runnable or skipped with a reason."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

from bench.errors import BenchError
from bench.hardware import Fingerprint
from bench.planner import CellMemory
from bench.runners.registry import BACKENDS, backend, device_reason
from bench.suite import Cell, Suite, axes, expand


@dataclass(frozen=True)
class PlannedCell:
    cell: Cell
    skip_reason: str = ""
    memory: CellMemory | None = None  # the backend's memory planner's estimate

    @property
    def runnable(self) -> bool:
        return not self.skip_reason


def plan_cells(suite: Suite, fingerprint: Fingerprint) -> list[PlannedCell]:
    planned = []
    missing = {b: backend(b).missing_reason() for b in suite.backends}
    devices: dict[tuple[str, str, int], str] = {}
    for cell in expand(suite):
        reason = missing[cell.backend]
        if not reason:
            key = (cell.backend, cell.device_kind, cell.device_index)
            if key not in devices:
                devices[key] = device_reason(fingerprint, *key)
            reason = devices[key]
        planned.append(PlannedCell(cell, reason))
    reasons = _quantization_reasons([p.cell for p in planned if p.runnable])
    checked = []
    for item in planned:
        cell = item.cell
        if item.runnable:
            item = replace(item, skip_reason=reasons.get(
                (cell.backend, cell.device_kind, cell.device_index, cell.quantization), ""))
        checked.append(item)
    return checked


def with_memory(suite: Suite, planned: list[PlannedCell], fingerprint: Fingerprint,
                force: bool = False) -> list[PlannedCell]:
    """Each cell with its backend's memory estimate; runnable cells that will not fit become skipped
    (unless force). Backends without a memory planner get a note saying so."""
    by_backend: dict[str, list[Cell]] = {}
    for item in planned:
        by_backend.setdefault(item.cell.backend, []).append(item.cell)
    estimates: dict[str, CellMemory] = {}
    for name, cells in by_backend.items():
        planner = BACKENDS[name].plan_memory
        if planner is not None:
            estimates.update(planner(cells, suite, fingerprint))
    out = []
    for item in planned:
        memory = estimates.get(item.cell.cell_id) or CellMemory(
            note=f"no memory estimate: the {item.cell.backend} backend has no memory planner")
        reason = item.skip_reason or ("" if force else memory.skip_reason())
        out.append(replace(item, memory=memory, skip_reason=reason))
    return out


def _quantization_reasons(cells: list[Cell]) -> dict[tuple[str, str, int, str], str]:
    """Why a device cannot run a quantization (e.g. fp16 or int4 on some CPUs for torch); '' where it can.

    A backend that checks (a real small layer at each quantization, in a subprocess) is asked once per
    device, and only for the quantizations the suite has runnable cells of.
    """
    wanted: dict[tuple[str, str, int], set[str]] = {}
    for cell in cells:
        if BACKENDS[cell.backend].quantization_reasons is not None:
            wanted.setdefault((cell.backend, cell.device_kind, cell.device_index), set()).add(cell.quantization)
    reasons: dict[tuple[str, str, int, str], str] = {}
    for (name, kind, index), quantizations in wanted.items():
        check = BACKENDS[name].quantization_reasons
        assert check is not None
        for quantization, reason in check(kind, index, sorted(quantizations)).items():
            reasons[(name, kind, index, quantization)] = reason
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
        if field not in axes():
            raise BenchError(f"--only {text!r}: unknown field {field!r}; allowed: {', '.join(axes())}")
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

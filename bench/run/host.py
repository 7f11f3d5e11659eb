"""Measuring a suite's groups on this host: get each group's model (bench.run.acquire, as the plan chose it),
check its memory, measure quality, run the group in isolated workers, and hand every cell's row fields to a
callback as the cell ends.

The same code serves a local run (bench.run.local) and a fleet host (bench.run.fleet_host): the caller owns the CSV and adds
this host's fingerprint to each row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.errors import BenchError, ModelUnavailable
from bench.execute.local import CellOutcome, WorkGroup, run_group, run_quality_job
from bench.hardware import Fingerprint, SystemWarning, system_warnings, warnings_text
from bench.hardware.bandwidth import MemoryBandwidth, device_bandwidth
from bench.models import ResolvedModel
from bench.plan import PlannedCell
from bench.quality import QualityScheduler, join_quality
from bench.run.acquire import ModelAcquirer
from bench.run.rows import RowOut
from bench.runners.registry import backend
from bench.runners.spec import BackendSpec
from bench.suite import GB, Cell, Suite

Emit = Callable[[RowOut], None]


def load_groups(planned: list[PlannedCell]) -> tuple[list[PlannedCell], list[list[PlannedCell]]]:
    """(cells skipped by the plan, groups of runnable cells sharing one loaded model), in suite order."""
    skipped: list[PlannedCell] = []
    groups: dict[tuple[Any, ...], list[PlannedCell]] = {}
    for item in planned:
        if item.runnable:
            groups.setdefault(item.cell.load_key(), []).append(item)
        else:
            skipped.append(item)
    return skipped, list(groups.values())


class HostRunner:
    """Runs groups of planned cells on this machine."""

    def __init__(
        self, suite: Suite, fingerprint: Fingerprint, *, force: bool = False, say: Callable[[str], None] | None = None
    ) -> None:
        self.suite = suite
        self.fingerprint = fingerprint
        self.force = force
        self.system_warnings: list[SystemWarning] = system_warnings(fingerprint)
        limit_gb = suite.limits.memory_limit_gb
        self.memory_limit = int(limit_gb * GB) if limit_gb else None
        self.models = ModelAcquirer(suite, say)
        # Quality reads its text and task files now: a malformed file stops the run before a row is written.
        self.quality = (
            QualityScheduler(
                suite,
                lambda cell: self.models.resolve(cell, backend(cell.backend)),
                run_quality_job,
                self.memory_limit,
                say,
                weights_of=self.models.weights,
            )
            if suite.quality.enabled
            else None
        )
        self._bandwidth_cache: dict[tuple[str, int], MemoryBandwidth | None] = {}

    def adopt_plan(self, planned: list[PlannedCell]) -> None:
        """The plan's decisions (which weights each cell uses) are what the run carries out."""
        self.models.adopt(planned)

    def bandwidth(self, cell: Cell) -> MemoryBandwidth | None:
        """The device's memory bandwidth for the roofline, once per device per run, with what it is: the CPU
        read probe (measured) or a GPU's NVML theoretical peak."""
        key = (cell.device_kind, cell.device_index)
        if key not in self._bandwidth_cache:
            self._bandwidth_cache[key] = device_bandwidth(self.fingerprint, cell.device_kind, cell.device_index)
        return self._bandwidth_cache[key]

    def probe_bandwidth(self, groups: list[list[PlannedCell]]) -> None:
        """Probe every device's bandwidth now: a probe while a worker measures would disturb it."""
        for group in groups:
            self.bandwidth(group[0].cell)

    def _ok_fields(self, cell: Cell, background_cpu_pct: float | None) -> dict[str, Any]:
        bandwidth = self.bandwidth(cell)
        return {
            "mem_bandwidth_gbs": round(bandwidth.gbs, 1) if bandwidth else None,
            "mem_bandwidth_source": bandwidth.source if bandwidth else "",
            "system_warnings": warnings_text(self.system_warnings, background_cpu_pct),
        }

    def run_group(
        self,
        group: list[PlannedCell],
        emit: Emit,
        on_start: Callable[[Cell], None] | None = None,
        refresh_warnings: bool = True,
    ) -> None:
        """Measure one group (planned cells sharing a loaded model); every cell ends in exactly one emitted
        row. A cell skipped before its model file is here (a model that cannot be had) keeps the plan's
        memory estimate on its row."""
        if refresh_warnings:  # what disturbs the machine now, for the rows this group writes
            self.system_warnings = system_warnings(self.fingerprint)
        self.models.adopt(group)
        first = group[0].cell
        spec = backend(first.backend)
        source, weights = self.models.source(first)
        try:
            resolved = self.models.resolve(first, spec)
        except ModelUnavailable as exc:
            for item in group:
                emit(RowOut(item.cell, "skipped", str(exc), {**item.row_fields(), **weights}, source))
            return
        except BenchError as exc:
            for item in group:
                emit(RowOut(item.cell, "failed", str(exc), dict(weights), source))
            return
        static = self.models.model_fields(resolved, spec)
        cells = [item.cell for item in group]
        memory = self._check_memory(cells, spec, resolved, source, static, emit)
        cells = [c for c in cells if c.cell_id in memory]
        if not cells:
            return
        # Once per quality key (what changes the logits; baseline first), joined onto each of its rows.
        quality = {c.cell_id: self.quality.fields_for(c) for c in cells} if self.quality else {}

        def on_outcome(outcome: CellOutcome) -> None:
            fields = {**static, **memory[outcome.cell.cell_id], **outcome.fields}
            if outcome.status == "ok":
                fields.update(self._ok_fields(outcome.cell, outcome.fields.get("background_cpu_pct")))
            emit(
                RowOut(
                    outcome.cell,
                    outcome.status,
                    outcome.reason,
                    join_quality(fields, quality.get(outcome.cell.cell_id, {})),
                    source,
                )
            )

        limits = self.suite.limits
        work = WorkGroup(
            backend=spec.name,
            model_path=resolved.path,
            cells=cells,
            memory_limit_bytes=self.memory_limit,
            load_timeout_s=limits.load_timeout_s,
            cell_timeout_s=limits.cell_timeout_s,
        )
        run_group(work, on_outcome, on_start)

    def _check_memory(
        self,
        cells: list[Cell],
        spec: BackendSpec,
        resolved: ResolvedModel,
        source: str,
        static: dict[str, Any],
        emit: Emit,
    ) -> dict[str, dict[str, Any]]:
        """Estimates from the file now on disk (exact sizes): est_* fields of the cells that fit (all with
        --force); the others are emitted as skipped."""
        planner = spec.plan_memory
        if planner is None or not resolved.path.is_file():
            return {cell.cell_id: {} for cell in cells}
        fitting: dict[str, dict[str, Any]] = {}
        estimates = planner(cells, self.suite, self.fingerprint, resolved.path)
        for cell in cells:
            memory = estimates[cell.cell_id]
            reason = "" if self.force else memory.skip_reason()
            if reason:
                emit(RowOut(cell, "skipped", reason, {**static, **memory.row_fields()}, source))
            else:
                fitting[cell.cell_id] = memory.row_fields()
        return fitting

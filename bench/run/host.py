"""Measuring a suite's groups on this host: resolve each group's model, check its memory, measure quality,
run the group in isolated workers, and hand every cell's row fields to a callback as the cell ends.

The same code serves a local run (bench.run.local) and a fleet host (bench.run.fleet_host): the caller owns the CSV and adds
this host's fingerprint to each row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ModelUnavailable
from bench.execute.local import CellOutcome, WorkGroup, run_group, run_quality_job
from bench.hardware import Fingerprint, SystemWarning, system_warnings, warnings_text
from bench.hardware.bandwidth import MemoryBandwidth, device_bandwidth
from bench.models import ResolvedModel, cell_model_reference, resolve
from bench.models.weights import WeightsChoice, choose_weights, synthetic_quantization, synthetic_shape
from bench.plan import PlannedCell
from bench.quality import QualityScheduler, join_quality
from bench.run.rows import RowOut
from bench.runners.registry import backend
from bench.suite import GB, Cell, Suite

Emit = Callable[[RowOut], None]


def load_groups(planned: list[PlannedCell]) -> tuple[list[PlannedCell], list[list[Cell]]]:
    """(cells skipped by the plan, groups of runnable cells sharing one loaded model), in suite order."""
    skipped: list[PlannedCell] = []
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    for item in planned:
        if item.runnable:
            groups.setdefault(item.cell.load_key(), []).append(item.cell)
        else:
            skipped.append(item)
    return skipped, list(groups.values())


class HostRunner:
    """Runs groups of cells on this machine."""

    def __init__(
        self, suite: Suite, fingerprint: Fingerprint, *, force: bool = False, say: Callable[[str], None] | None = None
    ) -> None:
        self.suite = suite
        self.fingerprint = fingerprint
        self.force = force
        self.say = say
        self.system_warnings: list[SystemWarning] = system_warnings(fingerprint)
        limit_gb = suite.limits.memory_limit_gb
        self.memory_limit = int(limit_gb * GB) if limit_gb else None
        # Quality reads its text and task files now: a malformed file stops the run before a row is written.
        self.quality = (
            QualityScheduler(suite, self.resolve_model, run_quality_job, self.memory_limit, say)
            if suite.quality.enabled
            else None
        )
        self._model_cache: dict[tuple[str, str, str], ResolvedModel | BenchError] = {}
        self._meta_cache: dict[tuple[Path, str], dict[str, Any]] = {}
        self._bandwidth_cache: dict[tuple[str, int], MemoryBandwidth | None] = {}

    def bandwidth(self, cell: Cell) -> MemoryBandwidth | None:
        """The device's memory bandwidth for the roofline, once per device per run, with what it is: the CPU
        read probe (measured) or a GPU's NVML theoretical peak."""
        key = (cell.device_kind, cell.device_index)
        if key not in self._bandwidth_cache:
            self._bandwidth_cache[key] = device_bandwidth(self.fingerprint, cell.device_kind, cell.device_index)
        return self._bandwidth_cache[key]

    def resolve_model(self, cell: Cell) -> ResolvedModel:
        key = (cell.model_id, cell.quantization, cell.backend)
        if key not in self._model_cache:
            try:
                self._model_cache[key] = self._resolve_uncached(cell)
            except BenchError as exc:
                self._model_cache[key] = exc
        found = self._model_cache[key]
        if isinstance(found, BenchError):
            raise found
        return found

    def _resolve_uncached(self, cell: Cell) -> ResolvedModel:
        model = self.suite.model(cell.model_id)
        spec = backend(cell.backend)
        choice = choose_weights(model, cell.quantization, spec.derives)
        if choice.synthetic:
            return self._synthesize(cell, choice)
        if spec.derives(model, cell.quantization) and spec.derive is not None:
            return spec.derive(self.suite, model, cell.quantization)
        resolved = resolve(cell_model_reference(model, cell.quantization))
        spec.check_model_file(resolved.path)
        return resolved

    def _model_source(self, cell: Cell) -> tuple[str, dict[str, str]]:
        """(the model_source column, the weights columns) of a cell, known before its model is resolved."""
        model = self.suite.model(cell.model_id)
        choice = choose_weights(model, cell.quantization, backend(cell.backend).derives)
        if choice.synthetic:
            return f"synthetic:{choice.shape}", choice.row_fields()
        try:
            return cell_model_reference(model, cell.quantization), choice.row_fields()
        except BenchError:
            return "", choice.row_fields()

    def _synthesize(self, cell: Cell, choice: WeightsChoice) -> ResolvedModel:
        """Synthetic weights of the model's shape (built once into the cache; progress said as it goes)."""
        model = self.suite.model(cell.model_id)
        spec = backend(cell.backend)
        quantization = synthetic_quantization(model, cell.quantization)
        reason = spec.synthetic_reason(quantization)
        if reason:
            raise ModelUnavailable(reason)
        assert spec.synthesize is not None  # synthetic_reason says so otherwise
        if self.say and choice.why:
            self.say(f"{cell.model_id} {cell.quantization}: {choice.describe()}")
        resolved = spec.synthesize(synthetic_shape(model), quantization, self.say)
        return replace(resolved, weights="synthetic", weights_shape=choice.shape)

    def model_fields(self, resolved: ResolvedModel, backend_name: str) -> dict[str, Any]:
        key = (resolved.path, backend_name)
        if key not in self._meta_cache:
            fields: dict[str, Any] = {
                "model_file": str(resolved.path),
                "derived_from": resolved.derived_from,
                "weights": resolved.weights,
                "weights_shape": resolved.weights_shape,
            }
            if resolved.path.is_file():
                fields["model_file_bytes"] = resolved.path.stat().st_size
                fields.update(backend(backend_name).model_fields(resolved.path))
            self._meta_cache[key] = fields
        return dict(self._meta_cache[key])

    def probe_bandwidth(self, groups: list[list[Cell]]) -> None:
        """Probe every device's bandwidth now: a probe while a worker measures would disturb it."""
        for cells in groups:
            self.bandwidth(cells[0])

    def _ok_fields(self, cell: Cell, background_cpu_pct: float | None) -> dict[str, Any]:
        bandwidth = self.bandwidth(cell)
        return {
            "mem_bandwidth_gbs": round(bandwidth.gbs, 1) if bandwidth else None,
            "mem_bandwidth_source": bandwidth.source if bandwidth else "",
            "system_warnings": warnings_text(self.system_warnings, background_cpu_pct),
        }

    def run_group(
        self,
        cells: list[Cell],
        emit: Emit,
        on_start: Callable[[Cell], None] | None = None,
        refresh_warnings: bool = True,
        planned_fields: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        """Measure one group (cells sharing a loaded model); every cell ends in exactly one emitted row.
        planned_fields: the plan's memory estimate per cell id, kept on rows of cells skipped before the
        model file is here (a model that cannot be had)."""
        planned_fields = planned_fields or {}
        if refresh_warnings:  # what disturbs the machine now, for the rows this group writes
            self.system_warnings = system_warnings(self.fingerprint)
        first = cells[0]
        source, weights = self._model_source(first)
        try:
            resolved = self.resolve_model(first)
        except ModelUnavailable as exc:
            for cell in cells:
                fields = {**planned_fields.get(cell.cell_id, {}), **weights}
                emit(RowOut(cell, "skipped", str(exc), fields, source))
            return
        except BenchError as exc:
            for cell in cells:
                emit(RowOut(cell, "failed", str(exc), dict(weights), source))
            return
        static = self.model_fields(resolved, first.backend)
        memory = self._check_memory(cells, resolved, source, static, emit)
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
        group = WorkGroup(
            backend=cells[0].backend,
            model_path=resolved.path,
            cells=cells,
            memory_limit_bytes=self.memory_limit,
            load_timeout_s=limits.load_timeout_s,
            cell_timeout_s=limits.cell_timeout_s,
        )
        run_group(group, on_outcome, on_start)

    def _check_memory(
        self, cells: list[Cell], resolved: ResolvedModel, source: str, static: dict[str, Any], emit: Emit
    ) -> dict[str, dict[str, Any]]:
        """Estimates from the file now on disk (exact sizes): est_* fields of the cells that fit (all with
        --force); the others are emitted as skipped."""
        planner = backend(cells[0].backend).plan_memory
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

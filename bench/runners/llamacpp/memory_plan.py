"""llama.cpp's memory planner (BackendSpec.plan_memory): each cell's estimate against its device's budget.

Shapes come from the GGUF file when it is on this machine (exact bytes per tensor), else from the known-models
table or the suite's `models[].metadata` (bench.runners.llamacpp.shapes); nothing is downloaded or built.
Estimates are memoized on what they depend on, so a large matrix (threads, prompt sizes) costs one estimate
per distinct context and memory setting, not one per cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.runners.base import context_size
from bench.runners.llamacpp.memory import (
    cell_batch_tokens,
    estimate_cell,
    kv_bytes_per_cell,
    max_context,
)
from bench.runners.llamacpp.quant_types import BITS_PER_WEIGHT, quant_type_from_name
from bench.runners.llamacpp.shapes import ModelShape, shape_from_gguf, shape_from_suite
from bench.runners.memory import Budget, CellMemory, MemoryEstimate, ModelFacts, device_budget

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.suite import Cell, ModelSpec, Suite


@dataclass(frozen=True)
class ShapeSource:
    shape: ModelShape | None
    quantization: str | None = None  # None: the shape's own bytes are exact
    note: str = ""
    fetch: str = ""


@dataclass
class ShapeFinder:
    """Finds each model × quantization's shape without downloading or building anything."""

    suite: Suite
    derives: Callable[[ModelSpec, str], bool]  # built from the model's source (the backend spec's `derives`)
    _found: dict[tuple[str, str], ShapeSource] = field(default_factory=dict)

    def find(self, model_id: str, quantization: str) -> ShapeSource:
        key = (model_id, quantization)
        if key not in self._found:
            try:
                self._found[key] = self._find(self.suite.model(model_id), quantization)
            except BenchError as exc:
                self._found[key] = ShapeSource(None, note=exc.message)
        return self._found[key]

    def _find(self, model: ModelSpec, quantization: str) -> ShapeSource:
        from bench.models import cell_model_reference, local_model_file

        if self.derives(model, quantization):
            from bench.runners.llamacpp.quantize import cached_derived_file

            source = local_model_file(model.source) if model.source else None
            if source is not None:
                built = cached_derived_file(source, quantization)
                if built is not None:
                    return ShapeSource(shape_from_gguf(built))
                return ShapeSource(shape_from_gguf(source), quantization)
            return self._from_suite(model, quantization, f"its source {model.source} is not on this machine")
        reference = cell_model_reference(model, quantization)
        local = local_model_file(reference)
        if local is not None:
            return ShapeSource(shape_from_gguf(local))
        quant = quantization if quantization in BITS_PER_WEIGHT else quant_type_from_name(reference)
        if quantization == "source" and model.source_quantization:
            quant = model.source_quantization
        return self._from_suite(model, quant, f"{reference} is not on this machine")

    @staticmethod
    def _from_suite(model: ModelSpec, quant: str, why: str) -> ShapeSource:
        fetch = f"{why}: `bench run` downloads it (or builds it), and skips the cell if it cannot"
        shape = shape_from_suite(model)
        if shape is None:
            return ShapeSource(
                None,
                note=f"no estimate: {why}, its shape is not built in and the suite's "
                "models[].metadata lacks params_b, n_layers, n_kv_heads, head_dim",
            )
        if quant not in BITS_PER_WEIGHT:
            return ShapeSource(
                None,
                note=f"no estimate: {why} and its quantization is unknown "
                "(name it in models[].files or source_quantization)",
            )
        return ShapeSource(replace(shape, file_type=quant), quant, fetch=fetch)


# What an estimate depends on besides the shape, the context and the batch (estimate_cell's arguments) ...
_ESTIMATE_KNOBS = ("n_ubatch", "kv_cache_type", "flash_attn", "n_gpu_layers", "repack", "parallel", "swa_full")
# ... and what the largest context depends on besides the shape and the budget (max_context's arguments).
_CONTEXT_KNOBS = ("n_ubatch", "kv_cache_type", "flash_attn", "n_gpu_layers", "swa_full", "parallel")


class CellEstimator:
    """Estimates cells against budgets, each distinct (shape, context, memory setting) once."""

    def __init__(self, budgets: dict[str, Budget]) -> None:
        self.budgets = budgets
        self._estimates: dict[tuple[object, ...], MemoryEstimate | str] = {}
        self._facts: dict[tuple[int, str], ModelFacts] = {}
        self._limits: dict[tuple[object, ...], Callable[[], int | None]] = {}

    def memory(self, cell: Cell, found: ShapeSource) -> CellMemory:
        budget = self.budgets[cell.device_id]
        shape = found.shape
        if shape is None:
            return CellMemory(note=found.note, budget=budget)
        estimate = self._estimate(cell, found, shape)
        if isinstance(estimate, str):
            return CellMemory(note=f"no estimate: {estimate}", budget=budget, fetch=found.fetch)
        return CellMemory(
            estimate=estimate,
            budget=budget,
            model=self._model_facts(shape, cell.knob("kv_cache_type")),
            fetch=found.fetch,
            context_limit=self._context_limit(cell, found, shape, budget),
        )

    def _estimate(self, cell: Cell, found: ShapeSource, shape: ModelShape) -> MemoryEstimate | str:
        knob = cell.knob  # (a knob read as an attribute goes through pydantic's __getattr__: 5x slower)
        key = (
            id(found),
            context_size(cell),
            cell_batch_tokens(cell),
            *(knob(k) for k in _ESTIMATE_KNOBS),
            cell.device_kind,
        )
        if key not in self._estimates:
            try:
                self._estimates[key] = estimate_cell(cell, shape, found.quantization)
            except BenchError as exc:
                self._estimates[key] = exc.message
        return self._estimates[key]

    def _model_facts(self, shape: ModelShape, kv_cache_type: str) -> ModelFacts:
        key = (id(shape), kv_cache_type)
        if key not in self._facts:
            self._facts[key] = ModelFacts(
                n_params=shape.n_params,
                n_ctx_train=shape.n_ctx_train,
                kv_bytes_per_token=kv_bytes_per_cell(shape, kv_cache_type),
                attention_flops_per_position=2.0
                * shape.n_layers
                * shape.n_heads
                * (shape.head_dim_k + shape.head_dim_v),
                basis=shape.basis,
                n_active_params=shape.n_active_params,
            )
        return self._facts[key]

    def _context_limit(
        self, cell: Cell, found: ShapeSource, shape: ModelShape, budget: Budget
    ) -> Callable[[], int | None]:
        """The largest context of the cell's setup, searched when first asked (plan views ask per setup)."""
        knob = cell.knob
        key = (id(found), cell.device_id, *(knob(k) for k in _CONTEXT_KNOBS))
        if key not in self._limits:
            self._limits[key] = ContextLimit(
                shape,
                budget,
                {
                    "quantization": found.quantization,
                    "device_kind": cell.device_kind,
                    **{k: knob(k) for k in _CONTEXT_KNOBS},
                },
            )
        return self._limits[key]


class ContextLimit:
    """max_context for one setup, searched once when first called. A plain class, not functools.cache over a
    partial, so that planned cells can be pickled (a fleet host sends its plan to the coordinator)."""

    def __init__(self, shape: ModelShape, budget: Budget, options: dict[str, Any]) -> None:
        self.shape, self.budget, self.options = shape, budget, options
        self._found: tuple[int | None] | None = None

    def __call__(self) -> int | None:
        if self._found is None:
            self._found = (max_context(self.shape, self.budget, **self.options),)
        return self._found[0]


def _budgets(suite: Suite, fingerprint: Fingerprint) -> dict[str, Budget]:
    return {d.id: device_budget(fingerprint, d, suite.limits) for d in suite.devices}


def plan_memory(
    suite: Suite, cells: Sequence[Cell], fingerprint: Fingerprint, derives: Callable[[ModelSpec, str], bool]
) -> dict[str, CellMemory]:
    """Each llama.cpp cell's estimate against its device's budget, by cell id."""
    finder = ShapeFinder(suite, derives)
    estimator = CellEstimator(_budgets(suite, fingerprint))
    return {cell.cell_id: estimator.memory(cell, finder.find(cell.model_id, cell.quantization)) for cell in cells}


def file_memory(cells: Sequence[Cell], path: Path, suite: Suite, fingerprint: Fingerprint) -> dict[str, CellMemory]:
    """Per cell id, the estimate from the GGUF file the cells will load (exact tensor sizes)."""
    try:
        found = ShapeSource(shape_from_gguf(path))
    except BenchError as exc:
        found = ShapeSource(None, note=f"no estimate: {exc.message}")
    estimator = CellEstimator(_budgets(suite, fingerprint))
    return {cell.cell_id: estimator.memory(cell, found) for cell in cells}

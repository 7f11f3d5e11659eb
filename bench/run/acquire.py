"""Getting a cell's model onto this host: the weights the plan chose (real or synthetic), resolved, built or
derived once per (model, quantization, backend), checked by the backend, and the row columns read from it.

The plan decides which weights a cell uses (PlannedCell.weights); this module only carries that decision out.
A cell the plan did not cover (quality's baseline when a shard or filter left it out) is decided here by the
same rule (bench.models.weights.choose_weights), so a run and its plan never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ModelUnavailable
from bench.models import ResolvedModel, cell_model_reference, resolve
from bench.models.weights import WeightsChoice, choose_weights, synthetic_quantization, synthetic_shape
from bench.plan import PlannedCell
from bench.runners.registry import backend
from bench.runners.spec import BackendSpec
from bench.suite import Cell, Suite

ModelKey = tuple[str, str, str]  # (model id, quantization, backend): cells sharing it share one model file


def model_key(cell: Cell) -> ModelKey:
    return (cell.model_id, cell.quantization, cell.backend)


class ModelAcquirer:
    """Resolves the models of one run on this host, each once (a failure is remembered too)."""

    def __init__(self, suite: Suite, say: Callable[[str], None] | None = None) -> None:
        self.suite = suite
        self.say = say
        self._choices: dict[ModelKey, WeightsChoice] = {}
        self._models: dict[ModelKey, ResolvedModel | BenchError] = {}
        self._fields: dict[tuple[Path, str], dict[str, Any]] = {}

    def adopt(self, planned: Iterable[PlannedCell]) -> None:
        """Take the plan's weights for its cells."""
        for item in planned:
            if item.weights is not None:
                self._choices.setdefault(model_key(item.cell), item.weights)

    def weights(self, cell: Cell) -> WeightsChoice:
        """The plan's choice for the cell's model; for a cell outside the plan, the same rule's."""
        key = model_key(cell)
        if key not in self._choices:
            derives = backend(cell.backend).derives
            self._choices[key] = choose_weights(self.suite.model(cell.model_id), cell.quantization, derives)
        return self._choices[key]

    def source(self, cell: Cell) -> tuple[str, dict[str, Any]]:
        """(the model_source column, the weights columns) of a cell, known before its model is resolved."""
        choice = self.weights(cell)
        if choice.synthetic:
            return f"synthetic:{choice.shape}", choice.row_fields()
        try:
            return cell_model_reference(self.suite.model(cell.model_id), cell.quantization), choice.row_fields()
        except BenchError:
            return "", choice.row_fields()

    def resolve(self, cell: Cell, spec: BackendSpec) -> ResolvedModel:
        """The cell's model file (downloaded, derived or synthesized the first time); BenchError if it cannot
        be had (ModelUnavailable: not here, and nothing was wrong)."""
        key = model_key(cell)
        if key not in self._models:
            try:
                self._models[key] = self._resolve_uncached(cell, spec)
            except BenchError as exc:
                self._models[key] = exc
        found = self._models[key]
        if isinstance(found, BenchError):
            raise found
        return found

    def _resolve_uncached(self, cell: Cell, spec: BackendSpec) -> ResolvedModel:
        model = self.suite.model(cell.model_id)
        choice = self.weights(cell)
        if choice.synthetic:
            return self._synthesize(cell, spec, choice)
        if spec.derives(model, cell.quantization) and spec.derive is not None:
            return spec.derive(self.suite, model, cell.quantization)
        resolved = resolve(cell_model_reference(model, cell.quantization))
        spec.check_model_file(resolved.path)
        return resolved

    def _synthesize(self, cell: Cell, spec: BackendSpec, choice: WeightsChoice) -> ResolvedModel:
        """Synthetic weights of the model's shape (built once into the cache; progress said as it goes)."""
        model = self.suite.model(cell.model_id)
        quantization = synthetic_quantization(model, cell.quantization)
        reason = spec.synthetic_reason(quantization)
        if reason:
            raise ModelUnavailable(reason)
        assert spec.synthesize is not None  # synthetic_reason says so otherwise
        if self.say and choice.why:
            self.say(f"{cell.model_id} {cell.quantization}: {choice.describe()}")
        resolved = spec.synthesize(synthetic_shape(model), quantization, self.say)
        return replace(resolved, weights="synthetic", weights_shape=choice.shape)

    def model_fields(self, resolved: ResolvedModel, spec: BackendSpec) -> dict[str, Any]:
        """The row columns a model file gives: its path, size, where it came from, and what the backend reads."""
        key = (resolved.path, spec.name)
        if key not in self._fields:
            fields: dict[str, Any] = {
                "model_file": str(resolved.path),
                "derived_from": resolved.derived_from,
                "weights": resolved.weights,
                "weights_shape": resolved.weights_shape,
            }
            if resolved.path.is_file():
                fields["model_file_bytes"] = resolved.path.stat().st_size
                fields.update(spec.model_fields(resolved.path))
            self._fields[key] = fields
        return dict(self._fields[key])

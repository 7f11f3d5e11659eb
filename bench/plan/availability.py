"""Which cells can run on this machine, and why the others cannot (checked without downloading anything).

A cell is skipped when its backend is not installed, its device is absent or unusable (the backend registry
says which), its backend cannot run its settings here (a tool they need is not built), its device cannot run its quantization (a backend's probe), its model reference can never resolve (a
malformed or escaping reference: bench.models.check_reference), or it would use synthetic weights (its file is
not here and the suite says `fallback: synthetic`, or the model is synthetic) its backend cannot build.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.errors import BenchError
from bench.hardware import Fingerprint
from bench.models import cell_model_reference, check_reference
from bench.models.weights import WeightsChoice, choose_weights, synthetic_quantization
from bench.plan.planned import PlannedCell
from bench.runners.registry import BACKENDS, backend, device_reason
from bench.suite import Cell, Suite, expand


def plan_cells(suite: Suite, fingerprint: Fingerprint, cells: Sequence[Cell] | None = None) -> list[PlannedCell]:
    """Each cell (the suite's whole matrix by default) as runnable or skipped with its reason, with the weights
    (real or synthetic) it will use."""
    cells = expand(suite) if cells is None else cells
    missing = {name: backend(name).missing_reason() for name in {c.backend for c in cells}}
    devices: dict[tuple[str, str, int], str] = {}
    models: dict[tuple[str, str, str], tuple[WeightsChoice, str]] = {}
    reasons, choices = [], []
    for cell in cells:
        model_key = (cell.model_id, cell.quantization, cell.backend)
        if model_key not in models:
            models[model_key] = _weights_and_problem(suite, *model_key)
        choice, model_reason = models[model_key]
        reason = missing[cell.backend]
        if not reason:
            key = (cell.backend, cell.device_kind, cell.device_index)
            if key not in devices:
                devices[key] = device_reason(fingerprint, *key)
            reason = devices[key] or _cell_reason(cell) or model_reason
        reasons.append(reason)
        choices.append(choice)
    quantization = _quantization_reasons([c for c, r in zip(cells, reasons, strict=True) if not r])
    return [
        PlannedCell(
            cell,
            reason or quantization.get((cell.backend, cell.device_kind, cell.device_index, cell.quantization), ""),
            weights=choice,
        )
        for cell, reason, choice in zip(cells, reasons, choices, strict=True)
    ]


def _cell_reason(cell: Cell) -> str:
    check = BACKENDS[cell.backend].cell_reason
    return check(cell) if check is not None else ""


def _weights_and_problem(
    suite: Suite, model_id: str, quantization: str, backend_name: str
) -> tuple[WeightsChoice, str]:
    """The weights a model gives at a quantization on this backend, and why they cannot be had ('' if they can)."""
    model = suite.model(model_id)
    spec = backend(backend_name)
    choice = choose_weights(model, quantization, spec.derives)
    if not choice.synthetic:
        return choice, reference_problem(suite, model_id, quantization)
    try:
        return choice, spec.synthetic_reason(synthetic_quantization(model, quantization))
    except BenchError as exc:
        return choice, exc.message


def reference_problem(suite: Suite, model_id: str, quantization: str) -> str:
    """Why the model's reference at this quantization can never resolve, or '' (a file that is merely
    absent now may still be downloaded, built or copied there before the run)."""
    try:
        check_reference(cell_model_reference(suite.model(model_id), quantization))
    except BenchError as exc:
        return exc.message
    return ""


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

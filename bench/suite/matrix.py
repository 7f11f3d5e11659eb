"""The matrix: a suite expanded into cells (models × quantizations × backends × devices × knobs × workload),
minus `exclude` matches, plus `include` slices — as a CI matrix works."""

from __future__ import annotations

import itertools
from typing import Any

from bench.errors import BenchError
from bench.suite.blocks import SETTINGS
from bench.suite.cell import AXIS_TO_FIELD, Cell
from bench.suite.knobs import KNOBS
from bench.suite.schema import SOURCE_QUANT, DeviceSpec, ModelSpec, Suite, as_list


def _axis_values(suite: Suite, backend: str, device: DeviceSpec) -> dict[str, list[Any]]:
    """Each knob's values for this backend on this device; knobs the backend does not take hold None."""
    overrides = device.overrides()
    values: dict[str, list[Any]] = {}
    for name, knob in KNOBS.items():
        if not knob.takes(backend):
            values[name] = [None]
        elif device.kind == "cpu" and knob.cpu_value is not None:
            values[name] = [knob.cpu_value]
        else:
            values[name] = overrides.get(name) or suite.knob_values(name)
    values["prompt_tokens"] = list(suite.workload.prompt_tokens)
    values["depth"] = list(suite.workload.depths)
    return values


def _resolved_quant(model: ModelSpec, quant: str) -> str:
    if quant == SOURCE_QUANT and model.source_quantization:
        return model.source_quantization
    return quant


def _cells_for(suite: Suite, model: ModelSpec, quant: str, backend: str, device: DeviceSpec) -> list[Cell]:
    axes = _axis_values(suite, backend, device)
    names = list(axes)
    base = {
        "suite": suite.name,
        "model_id": model.id,
        "quantization": _resolved_quant(model, quant),
        "backend": backend,
        "device_id": device.id,
        "device_kind": device.kind,
        "device_index": device.index,
        "gen_tokens": suite.workload.gen_tokens,
        "repetitions": suite.workload.repetitions,
        "warmup": suite.workload.warmup,
        "sustain_s": suite.workload.sustain_s,
        "sustain_window_s": suite.workload.sustain_window_s,
    }
    return [
        Cell.model_validate({**base, **dict(zip(names, combo, strict=True))})
        for combo in itertools.product(*(axes[n] for n in names))
    ]


def _wanted(axis: str, value: Any) -> list[Any]:
    values = as_list(value)
    if axis not in KNOBS:
        return values
    knob = KNOBS[axis]
    return [point for v in values for point in knob.points(knob.parsed(v))]


def matches(cell: Cell, entry: dict[str, Any]) -> bool:
    """True when the cell has one of the entry's values on every axis the entry names."""
    for axis, value in entry.items():
        actual = cell.axis_value(axis)
        wanted = _wanted(axis, value)
        if actual not in wanted and str(actual) not in [str(w) for w in wanted]:
            return False
    return True


def expand(suite: Suite) -> list[Cell]:
    """The full matrix, minus `exclude` matches, plus `include` slices."""
    full: list[Cell] = []
    for model in suite.models:
        for backend in suite.backends:
            for quant in suite.quantizations_for(backend):
                for device in suite.devices:
                    full.extend(_cells_for(suite, model, quant, backend, device))
    kept = [c for c in full if not any(matches(c, e) for e in suite.exclude)]
    for entry in suite.include:
        kept.extend(_include_slice(suite, entry))
    cells = list(dict.fromkeys(_settled(suite, c) for c in kept))  # dedupe, keep order
    if not cells:
        raise BenchError(
            f"suite {suite.name!r}: the matrix is empty after `exclude`; "
            "remove an exclude entry or add models/devices/quantizations"
        )
    return cells


def _settled(suite: Suite, cell: Cell) -> Cell:
    """The cell with the knobs its backend fills from the suite's own fields (after include's overrides, which
    may change what they depend on)."""
    settings = SETTINGS.get(cell.backend)
    if settings is None:
        return cell
    filled = settings.fill(suite, cell.fields())
    return cell.with_values(**filled) if filled else cell


def _include_slice(suite: Suite, entry: dict[str, Any]) -> list[Cell]:
    """An include entry adds the cells it names; axes it leaves out take all the suite's values."""
    models = [suite.model(m) for m in as_list(entry.get("model", [m.id for m in suite.models]))]
    backends = as_list(entry.get("backend", suite.backends))
    devices = [suite.device(d) for d in as_list(entry.get("device", [d.id for d in suite.devices]))]
    overrides = {k: v for k, v in entry.items() if k not in ("model", "backend", "device", "quantization")}
    out: list[Cell] = []
    for model in models:
        for backend in backends:
            for quant in as_list(entry.get("quantization", suite.quantizations_for(backend))):
                for device in devices:
                    out.extend(_apply_overrides(_cells_for(suite, model, quant, backend, device), overrides))
    return out


def _apply_overrides(cells: list[Cell], overrides: dict[str, Any]) -> list[Cell]:
    if not overrides:
        return cells
    names = list(overrides)
    out = []
    for cell in cells:
        # Each overridden axis takes the entry's value(s) instead of the suite's.
        for combo in itertools.product(*(_wanted(n, overrides[n]) for n in names)):
            out.append(cell.with_values(**{AXIS_TO_FIELD.get(n, n): v for n, v in zip(names, combo, strict=True)}))
    return list(dict.fromkeys(out))

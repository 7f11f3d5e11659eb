"""The backend registry: name -> spec. Plan, run, models, quality and report ask it; nothing outside a
backend's own package (bench/runners/<name>/) names a backend.

Adding a backend: a package bench/runners/<name>/ with `spec.py` (a BackendSpec) and its engine, one line in
`_SPEC_MODULES`, and the shared contract test (tests/runners/test_contract.py) runs on it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.runners.spec import BackendSpec
from bench.suite import SOURCE_QUANT

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.runners.base import SpeedEngine
    from bench.suite import Cell

_SPEC_MODULES = ("bench.runners.llamacpp.spec", "bench.runners.torch.spec")


def _load_specs() -> dict[str, BackendSpec]:
    specs = {}
    for module in _SPEC_MODULES:
        spec: BackendSpec = importlib.import_module(module).SPEC
        specs[spec.name] = spec
    return specs


BACKENDS: dict[str, BackendSpec] = _load_specs()


def backend(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise BenchError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def quantization_catalog() -> dict[str, tuple[str, ...]]:
    """backend -> the quantizations a suite may name for it (what bench.suite.load_suite checks against)."""
    return {name: spec.quantizations for name, spec in BACKENDS.items()}


def precision_order() -> tuple[str, ...]:
    """Every backend's quantizations, each backend's from the highest precision down (as its spec lists them)."""
    return tuple(q for spec in BACKENDS.values() for q in spec.quantizations if q != SOURCE_QUANT)


def device_reason(fingerprint: Fingerprint, backend_name: str, kind: str, index: int) -> str:
    """'' if the backend can run on device kind:index of this machine, else exactly what is missing."""
    spec = backend(backend_name)
    if kind not in spec.device_kinds:
        return f"backend {spec.name} does not run on {kind} devices (it runs on {', '.join(spec.device_kinds)})"
    if kind == "cuda":
        if fingerprint.nvml_status != "ok":
            return f"device cuda:{index} unavailable: {fingerprint.nvml_status}"
        if not 0 <= index < len(fingerprint.gpus):
            names = ", ".join(g.name for g in fingerprint.gpus)
            return f"device cuda:{index} absent: this machine has {len(fingerprint.gpus)} NVIDIA GPU(s)" + (
                f" ({names})" if names else ""
            )
    return spec.device_reason(fingerprint, kind, index)


def create_engine(backend_name: str, model_path: Path, load_cell: Cell) -> SpeedEngine:
    module_name, _, class_name = backend(backend_name).engine.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model_path, load_cell)

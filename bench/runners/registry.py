"""The backend registry: name -> spec. Plan, run, models, quality and report ask it; nothing outside a
backend's own package (bench/runners/<name>/) names a backend.

Adding a backend: a package bench/runners/<name>/ with `spec.py` (a BackendSpec: its knobs, version probe,
file check, quantizations, install hint, engine) and one line in `_SPEC_MODULES`; the shared contract test
(tests/runners/test_contract.py) runs on it. A backend that lives outside bench is added without editing it:
BENCH_BACKENDS=package.module[:ATTR],... names spec modules (their `SPEC`, or ATTR) loaded after the built-in
ones, in this process and in every worker it starts (they inherit the environment). A spec module is
imported while bench.suite is still loading, so it must not import its engine (nor bench.runners.base) at
module level: `engine` names it as "module:Class", imported in a worker (tests/runners/test_plugin_backend.py).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError
from bench.hardware import Fingerprint, detect
from bench.runners.spec import BackendSpec
from bench.suite.blocks import register_block, register_settings
from bench.suite.knobs import KNOBS, register, share
from bench.suite.schema import SOURCE_QUANT

if TYPE_CHECKING:
    from bench.runners.base import Engine
    from bench.suite import Cell

_SPEC_MODULES = ("bench.runners.llamacpp.spec", "bench.runners.torch.spec", "bench.runners.server.spec")
EXTRA_BACKENDS_ENV = "BENCH_BACKENDS"

BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    """Add a backend, its knobs (each knob taken by this backend only) and its suite block."""
    if spec.name in BACKENDS:
        raise BenchError(f"backend {spec.name!r} is registered twice")
    for knob in spec.knobs:
        register(replace(knob, backends=frozenset({spec.name})))
    for name in spec.shares_knobs:
        if name not in KNOBS:
            raise BenchError(f"backend {spec.name!r} shares knob {name!r}, which no backend registered before it")
        share(name, spec.name)
    if spec.suite_block is not None:
        foreign = [k for k in spec.suite_block.knobs.values() if k not in {knob.name for knob in spec.knobs}]
        if foreign:
            raise BenchError(f"backend {spec.name!r}: its suite block sets knobs it does not declare: {foreign}")
        register_block(spec.name, spec.suite_block)
    if spec.suite_settings is not None:
        foreign = [k for k in spec.suite_settings.knobs if k not in {knob.name for knob in spec.knobs}]
        if foreign:
            raise BenchError(f"backend {spec.name!r}: it fills knobs from the suite it does not declare: {foreign}")
        register_settings(spec.name, spec.suite_settings)
    BACKENDS[spec.name] = spec
    return spec


def _load_spec(reference: str) -> BackendSpec:
    module_name, _, attribute = reference.strip().partition(":")
    try:
        spec = getattr(importlib.import_module(module_name), attribute or "SPEC")
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"{EXTRA_BACKENDS_ENV}: cannot load backend spec {reference!r}: {exc}") from None
    if not isinstance(spec, BackendSpec):
        raise BenchError(f"{EXTRA_BACKENDS_ENV}: {reference!r} is not a BackendSpec")
    return spec


def _load_specs() -> None:
    extra = [r for r in os.environ.get(EXTRA_BACKENDS_ENV, "").split(",") if r.strip()]
    for reference in (*_SPEC_MODULES, *extra):
        register_backend(_load_spec(reference))


_load_specs()


def backend(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise BenchError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def default_backend() -> str:
    """The backend a suite that names none measures with: the first registered."""
    return next(iter(BACKENDS))


def detect_machine() -> Fingerprint:
    """This machine's fingerprint with every registered backend's software, as each spec probes it."""
    return detect({name: spec.software for name, spec in BACKENDS.items()})


def quantization_catalog() -> dict[str, tuple[str, ...]]:
    """backend -> the quantizations a suite may name for it (what bench.suite.load_suite checks against); the
    first backend is the one a suite that names none uses."""
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


def create_engine(backend_name: str, model_path: Path, load_cell: Cell) -> Engine:
    module_name, _, class_name = backend(backend_name).engine.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model_path, load_cell)

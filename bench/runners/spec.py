"""What the rest of bench may know about a backend: the contract of bench/runners/<name>/spec.py."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.hardware.fingerprint import BackendSoftware
from bench.hardware.probe import dist_version
from bench.suite.blocks import SuiteBlock, SuiteSettings
from bench.suite.knobs import Knob

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.models import ResolvedModel
    from bench.models.catalog import TransformerShape
    from bench.suite import Cell, ModelSpec, Suite


def _no_derivation(model: ModelSpec, quantization: str) -> bool:
    return False


def _no_fields(path: Path) -> dict[str, Any]:
    return {}


def _any_quantization(quantization: str) -> str:
    return ""


@dataclass(frozen=True)
class BackendSpec:
    """What the rest of bench may know about a backend."""

    name: str
    quantizations: tuple[str, ...]  # its quantization vocabulary: what `quantizations:` may name for it
    python_package: str  # importable when the backend is installed
    install_hint: str
    engine: str  # "module:Class" of its Engine: a SpeedEngine or a CellEngine (imported only in a worker)
    gives_logits: bool  # its engine also implements bench.quality's QualityModel
    device_kinds: tuple[str, ...]
    # Backend-specific reasons it cannot use a present device ('' when it can), e.g. a build without CUDA.
    device_reason: Callable[[Fingerprint, str, int], str]
    check_model_file: Callable[[Path], None]  # raises BenchError naming what is wrong with the file
    model_fields: Callable[[Path], dict[str, Any]] = _no_fields  # row columns read from the model file
    derives: Callable[[ModelSpec, str], bool] = _no_derivation  # built from the model's source by bench?
    derive: Callable[[Suite, ModelSpec, str], ResolvedModel] | None = None
    # Synthetic weights of a shape at a quantization, built (once, cached) with progress said as text lines;
    # None: the backend cannot use synthetic weights and such cells are skipped.
    synthesize: Callable[[TransformerShape, str, Callable[[str], None] | None], ResolvedModel] | None = None
    # Why synthetic weights cannot be had at a quantization ('' when they can): checked by the plan.
    synthetic_quantization_reason: Callable[[str], str] = _any_quantization
    # Why it cannot run one cell here that only the cell's settings tell ('' when it can), e.g. a tool the
    # settings need that is not built; checked by the plan after the device.
    cell_reason: Callable[[Cell], str] | None = None
    # Quantizations a device cannot run: (kind, index, quantizations) -> {quantization: reason or ''}.
    quantization_reasons: Callable[[str, int, list[str]], dict[str, str]] | None = None
    # The memory planner: (cells, suite, fingerprint, model file or None, ids of the cells the plan put on
    # synthetic weights) -> {cell_id: CellMemory}.
    plan_memory: Callable[..., dict[str, Any]] | None = None
    # The largest context a result row's device fits, from the row's figures: row -> (tokens or None, basis).
    max_context_for_row: Callable[[Mapping[str, Any]], tuple[int | None, str]] | None = None
    # Its own knobs (the registry registers them for this backend only, before any suite is read).
    knobs: tuple[Knob, ...] = ()
    # Knobs another backend declares that this one takes too, with the same meaning (e.g. an engine's settings
    # that a server of that engine is started with): registered before, so this backend loads after it.
    shares_knobs: tuple[str, ...] = ()
    # Its block in a suite (`<name>: {...}` at the top level): the model that validates it and the knob of its
    # own each field sets (the registry registers it; bench.suite.blocks). None: the backend has no block.
    suite_block: SuiteBlock | None = None
    # Knobs of its own it fills per cell from the suite's own fields (bench.suite.blocks.SuiteSettings).
    suite_settings: SuiteSettings | None = None
    # Its software-version probe (backend name -> what is installed); None: the package's distribution version.
    probe_software: Callable[[str], BackendSoftware] | None = None

    def software(self) -> BackendSoftware:
        """What of this backend is installed here: the `backend_version` / `backend_build` of its rows."""
        if self.probe_software is not None:
            return self.probe_software(self.name)
        return BackendSoftware(self.name, dist_version(self.python_package))

    def synthetic_reason(self, quantization: str) -> str:
        """Why this backend cannot run synthetic weights at `quantization` ('' when it can)."""
        if self.synthesize is None:
            return f"backend {self.name} cannot use synthetic weights"
        return self.synthetic_quantization_reason(quantization)

    def missing_reason(self) -> str:
        """'' if the backend can run here, else why not and how to fix it."""
        if importlib.util.find_spec(self.python_package) is None:
            return (
                f"backend {self.name} needs the Python package {self.python_package!r}, which is not "
                f"installed: {self.install_hint}"
            )
        return ""

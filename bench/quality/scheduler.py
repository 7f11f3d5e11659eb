"""The parent side of quality for `bench run`: one measurement per quality key, baseline first.

Quality describes a model's logits, so it is keyed by everything that changes them (`Cell.quality_key`: model,
quantization, backend, device kind and every knob the registry marks `logits`): the rows of two cells that
differ only in KV cache type get two measurements, each made on a cell with those values. Each key is compared
with its baseline: the same key at the baseline quantization, cached on disk under a name that carries those
logits settings (bench.quality.baseline). Every measurement runs in a worker process, like speed cells, so a
crash, hang or OOM becomes a warning on the rows, not a dead run: the run layer hands the scheduler the job
runner (bench.execute.local.run_quality_job), since bench.execute sits above bench.quality.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bench.errors import BenchError
from bench.models.weights import SYNTHETIC_QUALITY_REASON, WeightsChoice
from bench.quality.baseline import baseline_path, file_sha256
from bench.quality.measure import QualityJob
from bench.quality.model import no_logits_reason
from bench.quality.tasks import load_task
from bench.quality.text import load_eval_text
from bench.runners.registry import backend, precision_order
from bench.suite import SOURCE_QUANT, Cell, Suite, expand
from bench.suite.knobs import config_name, logits_knobs

if TYPE_CHECKING:
    from bench.models import ResolvedModel

# The cell fields besides knobs that change the logits, in Cell.quality_key's order; of those, the model file
# is known by its hash in a baseline's cache name, so only backend and device kind are named there.
MODEL_FILE_FIELDS = ("model_id", "quantization")
PLACE_FIELDS = ("backend", "device_kind")


class JobResult(Protocol):
    """What a quality job gave: its row fields, or why there are none."""

    fields: dict[str, Any]
    error: str


# (backend, model file, cell, QualityJob as a dict, timeout s, memory limit bytes) -> the job's result.
RunQualityJob = Callable[[str, Path, Cell, dict[str, Any], float, "int | None"], JobResult]


def logits_fields() -> tuple[str, ...]:
    """Names of the values of Cell.quality_key (the registry may gain a knob, so this is read when asked)."""
    return (*MODEL_FILE_FIELDS, *PLACE_FIELDS, *logits_knobs())


def logits_settings(cell: Cell) -> dict[str, Any]:
    """The logits-changing settings of a cell other than its model file: what a baseline's cache name carries."""
    fields = cell.fields()
    return {name: fields.get(name) for name in logits_fields() if name not in MODEL_FILE_FIELDS}


def default_baseline(quantizations: list[str]) -> str:
    """The highest-precision quantization (F32 > F16 > BF16 > Q8_0 > ...); the first listed among unknowns."""
    order = precision_order()
    return min(quantizations, key=lambda q: order.index(q) if q in order else len(order))


def join_quality(fields: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    """A speed row's fields with the quality columns added; both sets of warnings are kept."""
    joined = {**fields, **{k: v for k, v in quality.items() if k != "warnings"}}
    warnings = [w for w in (fields.get("warnings", ""), quality.get("warnings", "")) if w]
    joined["warnings"] = "; ".join(warnings)
    return joined


@dataclass(frozen=True)
class BaselineStatus:
    quantization: str
    path: Path | None  # None: no baseline to compare with
    reason: str = ""  # why there is none


class QualityScheduler:
    """Measures quality once per quality key for `bench run`, baseline first.

    The text and task files are read when the scheduler is made, so a malformed file stops the run before
    anything is measured.
    """

    def __init__(
        self,
        suite: Suite,
        resolve_model: Callable[[Cell], ResolvedModel],
        run_job: RunQualityJob,
        memory_limit_bytes: int | None = None,
        log: Callable[[str], None] | None = None,
        *,
        weights_of: Callable[[Cell], WeightsChoice],
    ) -> None:
        self.suite = suite
        self.weights_of = weights_of  # real or synthetic weights, as the plan chose them
        self.spec = suite.quality
        self.resolve_model = resolve_model
        self.run_job = run_job
        self.memory_limit_bytes = memory_limit_bytes
        self.log = log or (lambda message: None)
        self.text = load_eval_text(self.spec.text)
        self.tasks = [load_task(reference).limited(self.spec.task_limit) for reference in self.spec.tasks]
        self.timeout_s = suite.limits.load_timeout_s + suite.limits.cell_timeout_s
        self._results: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._baselines: dict[tuple[Any, ...], BaselineStatus] = {}  # by the baseline's own quality key
        self._quantizations: dict[tuple[str, str], list[str]] = {}
        self._threads: dict[str, int] = {}  # per device: most threads the suite uses there (0 = all cores)
        for cell in expand(suite):
            quants = self._quantizations.setdefault((cell.model_id, cell.backend), [])
            if cell.quantization not in quants:
                quants.append(cell.quantization)
            if cell.threads is not None:
                known = self._threads.get(cell.device_id)
                most = 0 if 0 in (cell.threads, known) else max(cell.threads, known or 0)
                self._threads[cell.device_id] = most

    def baseline_quantization(self, model_id: str, backend: str) -> str:
        """The suite's `quality.baseline` (`source`: the model file as given), else the highest precision."""
        if self.spec.baseline == SOURCE_QUANT:  # cells name the source by its type (e.g. Q4_1) when known
            return self.suite.model(model_id).source_quantization or SOURCE_QUANT
        measured = self._quantizations.get((model_id, backend), [SOURCE_QUANT])
        return self.spec.baseline or default_baseline(measured)

    def fields_for(self, cell: Cell) -> dict[str, Any]:
        """Quality columns for the rows of every cell with this cell's quality key (measured on this cell's
        values of LOGITS_FIELDS the first time the key is asked for)."""
        key = cell.quality_key()
        if key not in self._results:
            if not backend(cell.backend).gives_logits:
                self._results[key] = {"warnings": f"quality not measured: {no_logits_reason(cell.backend)}"}
                return self._results[key]
            if self.weights_of(cell).synthetic:  # random values: any quality figure would describe noise
                self._results[key] = {"warnings": SYNTHETIC_QUALITY_REASON}
                return self._results[key]
            baseline = self._baseline(cell)
            if key not in self._results:  # the baseline job may just have measured this very key
                is_baseline = cell.quantization == baseline.quantization
                warnings = [] if baseline.path else [f"no KLD: baseline {baseline.quantization}: {baseline.reason}"]
                write = is_baseline and baseline.path is not None and not baseline.path.exists()
                self._results[key] = self._measure(cell, baseline, write=write, warnings=warnings)
        return self._results[key]

    def _quality_cell(self, cell: Cell, quantization: str) -> Cell:
        """The cell quality runs with: the given knobs and the most threads the suite uses on its device.

        Quality does not depend on threads; the suite's largest count is one known to suit the machine.
        """
        return cell.with_values(quantization=quantization, threads=self._threads.get(cell.device_id, cell.threads))

    def _baseline(self, cell: Cell) -> BaselineStatus:
        """The baseline for this cell's key: the same logits settings at the baseline quantization, measured
        now if its cache file does not exist yet."""
        base_quant = self.baseline_quantization(cell.model_id, cell.backend)
        base_cell = self._quality_cell(cell, base_quant)
        base_key = base_cell.quality_key()
        if base_key in self._baselines:
            return self._baselines[base_key]
        base_weights = self.weights_of(base_cell)
        if base_weights.synthetic:  # a baseline is never built from synthetic weights
            self._baselines[base_key] = BaselineStatus(base_quant, None, base_weights.describe())
            return self._baselines[base_key]
        try:
            resolved = self.resolve_model(base_cell)
            path = baseline_path(file_sha256(resolved.path), self.text.sha256, self.spec, logits_settings(base_cell))
        except BenchError as exc:
            self._baselines[base_key] = BaselineStatus(base_quant, None, exc.message)
            return self._baselines[base_key]
        if not path.exists():
            pending = BaselineStatus(base_quant, path)
            self._results[base_key] = self._measure(base_cell, pending, write=True, warnings=[])
        reason = "" if path.exists() else (self._results[base_key].get("warnings") or "not measured")
        self._baselines[base_key] = BaselineStatus(base_quant, path if path.exists() else None, reason)
        return self._baselines[base_key]

    def _measure(self, cell: Cell, baseline: BaselineStatus, write: bool, warnings: list[str]) -> dict[str, Any]:
        settings = config_name(cell.knobs(), logits_knobs())
        label = f"{cell.model_id} {cell.quantization} {cell.backend}/{cell.device_kind} {settings}".rstrip()
        self.log(f"quality: {label}" + (" (baseline)" if write else ""))
        try:
            resolved = self.resolve_model(cell)
        except BenchError as exc:
            return {"baseline_quantization": baseline.quantization, "warnings": f"quality not measured: {exc.message}"}
        job = QualityJob(
            spec=self.spec,
            quantization=cell.quantization,
            baseline_quantization=baseline.quantization,
            baseline_path=str(baseline.path) if baseline.path else None,
            write_baseline=write,
            text=self.text.text,
            tasks=self.tasks,
            warnings=warnings,
        )
        outcome = self.run_job(
            cell.backend,
            resolved.path,
            self._quality_cell(cell, cell.quantization),
            job.model_dump(),
            self.timeout_s,
            self.memory_limit_bytes,
        )
        if outcome.error:
            return {
                "baseline_quantization": baseline.quantization,
                "warnings": f"quality not measured: {outcome.error}",
            }
        return outcome.fields

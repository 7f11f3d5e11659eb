"""What a backend's memory planner returns (BackendSpec.plan_memory), and the budget a cell is held to.

Backend-neutral: a planner (e.g. bench/runners/llamacpp/memory_plan.py) fills these types, and the plan stage
(bench/plan) and `bench run` read them without knowing which backend made them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.suite.schema import GB

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.suite import DeviceSpec, Limits

MIB = 2**20
GIB = 2**30
# The Python side of a bench worker (interpreter, numpy, pandas, the backend's library): ~55-100 MiB.
WORKER_PROCESS_BYTES = 96 * MIB


@dataclass(frozen=True)
class MemoryEstimate:
    """One cell's memory, per memory. `where` is the memory that limits the cell."""

    n_ctx: int
    weights_ram: int
    weights_vram: int
    kv_ram: int
    kv_vram: int
    compute_ram: int
    compute_vram: int
    basis: str = ""
    # KV bytes one more context position adds on the limiting memory (`where`): a sliding-window layer that keeps
    # a window-sized cache adds none. None: the planner does not say (then kv_bytes / n_ctx).
    kv_bytes_per_token: float | None = None

    @property
    def where(self) -> str:
        return "VRAM" if self.weights_vram or self.kv_vram else "RAM"

    @property
    def ram_bytes(self) -> int:
        return self.weights_ram + self.kv_ram + self.compute_ram

    @property
    def vram_bytes(self) -> int:
        return self.weights_vram + self.kv_vram + self.compute_vram

    @property
    def weights_bytes(self) -> int:
        return self.weights_vram if self.where == "VRAM" else self.weights_ram

    @property
    def kv_bytes(self) -> int:
        return self.kv_vram if self.where == "VRAM" else self.kv_ram

    @property
    def compute_bytes(self) -> int:
        return self.compute_vram if self.where == "VRAM" else self.compute_ram

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes


@dataclass(frozen=True)
class Budget:
    """Memory a cell may use: free now on this machine, or declared in the suite for an absent device."""

    ram_bytes: int | None
    vram_bytes: int | None
    source: str  # said after the number: "available now", "free now", "memory_gb: 24 in the suite", ...

    def on(self, where: str) -> int | None:
        return self.vram_bytes if where == "VRAM" else self.ram_bytes


def device_budget(fingerprint: Fingerprint, device: DeviceSpec, limits: Limits | None = None) -> Budget:
    """RAM available now (or the worker's memory limit, if lower); a present GPU's free VRAM, or for an
    absent one the suite's devices[].memory_gb."""
    ram: int | None = fingerprint.ram_available_bytes or None
    source = "available now"
    limit_gb = limits.memory_limit_gb if limits is not None else None
    if ram is not None and limit_gb and limit_gb * GB < ram:  # the worker cannot use more than its limit
        ram, source = int(limit_gb * GB), f"the suite's limits.memory_limit_gb ({limit_gb:g} GB)"
    declared = int(device.memory_gb * GB) if device.memory_gb else None
    if device.kind == "cpu":
        return Budget(ram, None, source)
    if 0 <= device.index < len(fingerprint.gpus):
        return Budget(ram, fingerprint.gpus[device.index].vram_free_bytes, "free now")
    if declared:  # planning for a card this machine does not have: its host RAM is unknown
        return Budget(None, declared, f"memory_gb: {device.memory_gb:g} (GB) in the suite")
    return Budget(None, None, "unknown: the device is absent (set devices[].memory_gb to plan for it)")


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def fit_problem(estimate: MemoryEstimate, budget: Budget) -> str:
    """Why the cell will not fit (with the numbers), or '' when it fits or the budget is unknown."""
    problems = []
    if (
        (estimate.weights_vram or estimate.kv_vram)
        and budget.vram_bytes is not None
        and estimate.vram_bytes > budget.vram_bytes
    ):
        problems.append(
            f"needs ~{gib(estimate.vram_bytes)} VRAM (weights {gib(estimate.weights_vram)} + KV {gib(estimate.kv_vram)}"
            f" + compute {gib(estimate.compute_vram)}) but {gib(budget.vram_bytes)} is {budget.source}"
        )
    if budget.ram_bytes is not None and estimate.ram_bytes + WORKER_PROCESS_BYTES > budget.ram_bytes:
        problems.append(
            f"needs ~{gib(estimate.ram_bytes + WORKER_PROCESS_BYTES)} RAM (weights {gib(estimate.weights_ram)} + KV "
            f"{gib(estimate.kv_ram)} + compute {gib(estimate.compute_ram)} + worker {gib(WORKER_PROCESS_BYTES)}) but "
            f"{gib(budget.ram_bytes)} is {budget.source}"
        )
    return "; ".join(problems)


def fits(estimate: MemoryEstimate, budget: Budget) -> bool:
    return not fit_problem(estimate, budget)


@dataclass(frozen=True)
class ModelFacts:
    """What a planner knows about the model a cell loads, for plan views and time estimates."""

    n_params: int
    n_ctx_train: int | None  # the context the model was trained for, when known
    kv_bytes_per_token: float  # KV cache bytes one context position takes, at the cell's KV type
    # Attention FLOPs one token spends per earlier position it attends to (Q·K and the V sum, all layers):
    # what makes prefill slower at depth.
    attention_flops_per_position: float
    basis: str  # where the shape came from: "GGUF header of x.gguf", "known shape: ...", "suite metadata"
    # Parameters one token goes through; a mixture of experts' is its used experts' share. None: all.
    n_active_params: int | None = None

    @property
    def active_share(self) -> float:
        """The share of the weights one token reads and computes with (1.0 for a dense model)."""
        if not self.n_active_params or not self.n_params:
            return 1.0
        return self.n_active_params / self.n_params


@dataclass(frozen=True)
class CellMemory:
    """A memory planner's word on one cell: its estimate against its budget, or why there is none."""

    estimate: MemoryEstimate | None = None
    budget: Budget | None = None
    model: ModelFacts | None = None
    note: str = ""  # why there is no estimate
    fetch: str = ""  # the model file is not on this machine yet: what `bench run` will have to get
    # What fits per sequence: the largest context each of the setup's `parallel` sequences can hold with full
    # batches (computed on demand: a search over contexts); None where the planner cannot say.
    context_limit: Callable[[], int | None] | None = field(default=None, repr=False, compare=False)

    @property
    def problem(self) -> str:
        return fit_problem(self.estimate, self.budget) if self.estimate and self.budget else ""

    def largest_context(self) -> int | None:
        return self.context_limit() if self.context_limit is not None else None

    def row_fields(self) -> dict[str, Any]:
        if self.estimate is None:
            return {}
        estimate = self.estimate
        return {
            "est_weights_bytes": estimate.weights_bytes,
            "est_kv_bytes": estimate.kv_bytes,
            "est_compute_bytes": estimate.compute_bytes,
            "est_total_bytes": estimate.total_bytes,
            "est_kv_bytes_per_token": estimate.kv_bytes_per_token,
            "est_device_free_bytes": self.budget.on(estimate.where) if self.budget else None,
            "n_active_params": self.model.n_active_params if self.model else None,
        }

    def skip_reason(self) -> str:
        problem = self.problem
        if not problem:
            return ""
        return (
            f"will not fit (memory planner, {self.estimate.basis if self.estimate else ''}): {problem}; "
            "run anyway with --force"
        )

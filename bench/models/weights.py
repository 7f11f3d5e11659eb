"""Real or synthetic weights, per cell: which a suite model gives at a quantization on this machine, and why.

A model is synthetic-only (`source: synthetic:<name>`, or `synthetic:` without files), real-only, or real
with `fallback: synthetic`: its real file when it is on this machine already (checked without downloading:
bench.models.local_model_file), else synthetic weights of the shape its `synthetic:` names. The choice is
made the same way by the plan (which shows it), the run (which builds what it chose) and quality (which
never measures synthetic weights), so a cell's weights are never chosen silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.errors import BenchError
from bench.models import cell_model_reference, local_model_file
from bench.models.catalog import TransformerShape, known_shape, shape_from_config_file
from bench.suite import SOURCE_QUANT, ModelSpec, SyntheticConfig

Weights = Literal["real", "synthetic"]
# Said wherever quality would be measured on synthetic weights (rows, plan, report).
SYNTHETIC_QUALITY_REASON = "quality not measured: synthetic weights (random values) — speed and memory only"


@dataclass(frozen=True)
class WeightsChoice:
    """Which weights a cell uses: `shape` names the synthetic shape (a known name or a config.json path), `why`
    says why synthetic weights stand in for a real file ('' when the suite asks for synthetic weights only)."""

    weights: Weights
    shape: str = ""
    why: str = ""

    @property
    def synthetic(self) -> bool:
        return self.weights == "synthetic"

    def row_fields(self) -> dict[str, str]:
        return {"weights": self.weights, "weights_shape": self.shape}

    def describe(self) -> str:
        """What `bench plan` says about the cell's weights ('' for real weights)."""
        if not self.synthetic:
            return ""
        what = f"synthetic weights of {self.shape}"
        return f"{self.why}: {what}" if self.why else what


REAL = WeightsChoice("real")


def shape_label(model: ModelSpec) -> str:
    """The `weights_shape` column: the known name, or the config.json's path."""
    ref = model.synthetic_shape_ref
    if isinstance(ref, SyntheticConfig):
        return ref.config
    return ref or ""


def synthetic_shape(model: ModelSpec) -> TransformerShape:
    """The model's synthetic shape (BenchError: unknown name, unreadable config, unsupported architecture)."""
    ref = model.synthetic_shape_ref
    if ref is None:
        raise BenchError(f"model {model.id!r} has no synthetic shape (add `synthetic:` and `fallback: synthetic`)")
    if isinstance(ref, SyntheticConfig):
        return shape_from_config_file(Path(ref.config))
    return known_shape(ref)


def synthetic_model_problems(model: ModelSpec) -> list[tuple[tuple[str, ...], str]]:
    """The loader's check of a model's synthetic shape (bench.suite.ModelCheck): (field, message) problems."""
    ref = model.synthetic_shape_ref
    if ref is None:
        return []
    loc: tuple[str, ...] = (
        ("synthetic", "config")
        if isinstance(ref, SyntheticConfig)
        else ("synthetic",)
        if model.synthetic is not None
        else ("source",)
    )
    try:
        synthetic_shape(model)
    except BenchError as exc:
        return [(loc, exc.message + (f" ({exc.hint})" if exc.hint else ""))]
    return []


def synthetic_quantization(model: ModelSpec, quantization: str) -> str:
    """The quantization synthetic weights are built at: `source` means the type the real source has."""
    if quantization == SOURCE_QUANT:
        if model.source_quantization is None:
            raise BenchError(
                f"model {model.id!r}: synthetic weights have no `source` file type; name quantizations "
                "(e.g. Q4_K_M), or give source_quantization"
            )
        return model.source_quantization
    return quantization


def choose_weights(model: ModelSpec, quantization: str, derives: Callable[[ModelSpec, str], bool]) -> WeightsChoice:
    """Real or synthetic weights for the model at `quantization`. `derives` is the backend's (BackendSpec.derives):
    a quantization built from the source needs the source here, not the quantized file."""
    if model.synthetic_only:
        return WeightsChoice("synthetic", shape_label(model))
    if not model.fallback:
        return REAL
    if derives(model, quantization) and model.source is not None:
        reference = model.source
    else:
        try:
            reference = cell_model_reference(model, quantization)
        except BenchError:
            return WeightsChoice("synthetic", shape_label(model), f"no file for {quantization}")
    if is_on_this_machine(reference):
        return REAL
    return WeightsChoice("synthetic", shape_label(model), absent_reason(reference))


def is_on_this_machine(reference: str) -> bool:
    """The reference's file or folder is here now (the hub cache, an installed package, a local path)."""
    try:
        if local_model_file(reference) is not None:
            return True
    except BenchError:  # hf://org/repo (a whole repository) is not a file reference
        pass
    if reference.startswith(("hf://", "package:")):
        return _hub_repo_cached(reference) if reference.startswith("hf://") else False
    return Path(reference).expanduser().is_dir()  # a model folder (torch)


def _hub_repo_cached(reference: str) -> bool:
    """hf://org/repo: a snapshot is in the local Hugging Face cache (never asks the hub)."""
    spec = reference.removeprefix("hf://")
    if len(spec.rsplit("@", 1)[0].strip("/").split("/")) != 2:
        return False
    try:
        from huggingface_hub import snapshot_download

        repo_id, _, revision = spec.partition("@")
        snapshot_download(repo_id=repo_id, revision=revision or None, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or no huggingface_hub): absent, which is the answer
        return False
    return True


def absent_reason(reference: str) -> str:
    """Why a real file is not used: said next to the synthetic weights that stand in for it."""
    if reference.startswith("hf://"):
        return "hub file not in the cache"
    if reference.startswith("package:"):
        return f"{reference.removeprefix('package:').split('/', 1)[0]} not installed"
    return f"{reference} not found"

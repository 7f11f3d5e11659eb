"""The llama.cpp backend as the rest of bench sees it (bench.runners.registry)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.runners.llamacpp import knobs
from bench.runners.llamacpp.quant_types import GGUF_QUANT_TYPES
from bench.runners.llamacpp.software import probe_llama_cpp
from bench.runners.spec import BackendSpec
from bench.suite.schema import SOURCE_QUANT

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.models import ResolvedModel
    from bench.models.catalog import TransformerShape
    from bench.suite import Cell, ModelSpec, Suite

NAME = "llamacpp"


def _device_reason(fingerprint: Fingerprint, kind: str, index: int) -> str:
    """What keeps llama.cpp off a device (whether it is installed at all is BackendSpec.missing_reason)."""
    if kind != "cuda":
        return ""
    software = fingerprint.software(NAME)
    if not software.version:
        return "llama-cpp-python is not installed; run scripts/install.sh"
    if not software.gpu_offload:
        return (
            "llama-cpp-python on this machine was built without GPU offload; "
            "reinstall with scripts/install.sh on a machine with nvcc (or BENCH_LLAMA_CUDA=1)"
        )
    return ""


def needs_derivation(model: ModelSpec, quantization: str) -> bool:
    """True when this quantization must be derived from the model's source file with llama.cpp's quantizer
    (a synthetic model has no source file: its quantizations are built by bench.runners.llamacpp.synthetic)."""
    if model.synthetic_only:
        return False
    return quantization not in model.files and quantization not in (SOURCE_QUANT, model.source_quantization)


def _check_gguf(path: Path) -> None:
    from bench.models import check_gguf

    check_gguf(path)


def _model_fields(path: Path) -> dict[str, Any]:
    from bench.models import gguf_metadata

    return gguf_metadata(path)


def _derive(suite: Suite, model: ModelSpec, quantization: str) -> ResolvedModel:
    from bench.runners.llamacpp.quantize import derived_model

    return derived_model(suite, model, quantization)


def _synthesize(shape: TransformerShape, quantization: str, say: Callable[[str], None] | None) -> ResolvedModel:
    from bench.runners.llamacpp.synthetic import synthesized_model

    return synthesized_model(shape, quantization, say)


def _synthetic_quantization_reason(quantization: str) -> str:
    from bench.runners.llamacpp.synthetic import synthetic_quantization_reason

    return synthetic_quantization_reason(quantization)


def _plan_memory(
    cells: list[Cell],
    suite: Suite,
    fingerprint: Fingerprint,
    model_file: Path | None = None,
    synthetic_ids: Collection[str] = frozenset(),
) -> dict[str, Any]:
    from bench.runners.llamacpp.memory_plan import file_memory, plan_memory
    from bench.runners.llamacpp.synthetic_plan import synthetic_memory

    if model_file is not None:
        return file_memory(cells, model_file, suite, fingerprint)
    synthetic = [cell for cell in cells if cell.cell_id in synthetic_ids]
    real = [cell for cell in cells if cell.cell_id not in synthetic_ids]
    return {
        **plan_memory(suite, real, fingerprint, needs_derivation),
        **synthetic_memory(suite, synthetic, fingerprint),
    }


def _max_context_for_row(row: Mapping[str, Any]) -> tuple[int | None, str]:
    from bench.runners.llamacpp.memory import max_context_for_row

    return max_context_for_row(row)


SPEC = BackendSpec(
    name=NAME,
    quantizations=(SOURCE_QUANT, *GGUF_QUANT_TYPES),
    python_package="llama_cpp",
    install_hint="pip install llama-cpp-python (scripts/install.sh picks build flags for this CPU)",
    engine="bench.runners.llamacpp.runner:LlamaCppRunner",
    gives_logits=True,
    device_kinds=("cpu", "cuda"),
    device_reason=_device_reason,
    check_model_file=_check_gguf,
    model_fields=_model_fields,
    derives=needs_derivation,
    derive=_derive,
    synthesize=_synthesize,
    synthetic_quantization_reason=_synthetic_quantization_reason,
    plan_memory=_plan_memory,
    max_context_for_row=_max_context_for_row,
    knobs=knobs.KNOBS,
    probe_software=probe_llama_cpp,
)

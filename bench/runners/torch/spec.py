"""The PyTorch/transformers backend as the rest of bench sees it (bench.runners.registry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.runners.spec import BackendSpec
from bench.runners.torch import knobs

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.models import ResolvedModel
    from bench.models.catalog import TransformerShape

TORCH_QUANT_TYPES = ("fp32", "bf16", "fp16", "int8", "int4")
NAME = "torch"
INSTALL_HINT = "BENCH_EXTRAS=dev,models,torch ./scripts/install.sh (pins the torch wheel bench is tested with)"


def _device_reason(fingerprint: Fingerprint, kind: str, index: int) -> str:
    """What keeps torch off a device (whether torch is installed at all is BackendSpec.missing_reason)."""
    if kind != "cuda":
        return ""
    version = fingerprint.software(NAME).version
    if not version:
        return f"torch is not installed; {INSTALL_HINT}"
    try:
        import torch  # lazily: importing torch takes seconds
    except Exception as exc:  # noqa: BLE001 - a broken torch install is a reason, not a crash
        return f"torch {version} failed to import: {exc}"
    if not torch.cuda.is_available():
        return f"torch {version} cannot use CUDA (torch.cuda.is_available() is False); install a CUDA build of torch"
    if index >= torch.cuda.device_count():
        return f"torch sees only {torch.cuda.device_count()} CUDA device(s); cuda:{index} is not one of them"
    return ""


def _check_model(path: Path) -> None:
    from bench.runners.torch.files import check_torch_model

    check_torch_model(path)


def _synthesize(shape: TransformerShape, quantization: str, say: Callable[[str], None] | None) -> ResolvedModel:
    from bench.runners.torch.synthetic import synthetic_folder

    return synthetic_folder(shape, quantization, say)


def _quantization_reasons(kind: str, index: int, quantizations: list[str]) -> dict[str, str]:
    from bench.runners.torch.probe import quantization_skip_reasons

    return quantization_skip_reasons(kind, index, quantizations)


SPEC = BackendSpec(
    name=NAME,
    quantizations=TORCH_QUANT_TYPES,
    python_package="torch",
    install_hint=INSTALL_HINT,
    engine="bench.runners.torch.runner:TorchRunner",
    gives_logits=True,
    device_kinds=("cpu", "cuda"),
    device_reason=_device_reason,
    check_model_file=_check_model,
    quantization_reasons=_quantization_reasons,
    synthesize=_synthesize,
    knobs=knobs.KNOBS,
)

"""What each torch quantization means: the weights' dtype, or torchao's weight-only config."""

from __future__ import annotations

from typing import Any

FLOAT_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
WEIGHT_ONLY = ("int8", "int4")
# Activations of weight-only quantized models: bf16 where the GPU's kernels expect it; on CPUs bf16
# matmuls are emulated on most parts, so fp32. tinygemm's int4 kernel accepts only bf16.
WEIGHT_ONLY_COMPUTE = {
    ("int8", "cpu"): "float32",
    ("int8", "cuda"): "bfloat16",
    ("int4", "cpu"): "bfloat16",
    ("int4", "cuda"): "bfloat16",
}
# torchao's int4 layouts: tinygemm's tile-packed one on CUDA; on CPU only the plain one (it needs mslk).
INT4_PACKING = {"cuda": "tile_packed_to_4d", "cpu": "plain"}
INT4_GROUP_SIZES = (128, 64, 32)


def device_name(kind: str, index: int) -> str:
    return "cpu" if kind == "cpu" else f"cuda:{index}"


def compute_dtype_name(quantization: str, device_kind: str) -> str | None:
    """The torch dtype the model runs in at this quantization; None: as stored (a model-file quantization)."""
    if quantization in FLOAT_DTYPES:
        return FLOAT_DTYPES[quantization]
    if quantization in WEIGHT_ONLY:
        return WEIGHT_ONLY_COMPUTE[(quantization, device_kind)]
    return None


def weight_only_config(quantization: str, device_kind: str, group_size: int = 128) -> Any:
    """The torchao quantize_ config of a weight-only quantization on this kind of device."""
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if quantization == "int8":
        return Int8WeightOnlyConfig()
    return Int4WeightOnlyConfig(group_size=group_size, int4_packing_format=INT4_PACKING[device_kind])

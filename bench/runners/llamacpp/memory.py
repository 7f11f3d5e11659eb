"""llama.cpp's memory model: how much memory a cell needs, and the largest context that fits a budget.

A cell needs, on each memory (host RAM, GPU VRAM):

* weights: the model's tensors, split by llama.cpp's offload rule (token embeddings stay in RAM; with
  `n_gpu_layers = k` the output head and the last k-1 repeating layers go to the GPU; -1 offloads all);
* KV cache: per layer KV heads × (K + V head size) × bytes of the KV type × cells, where cells is the
  context, except for sliding-window layers when llama.cpp keeps a window-sized cache (`swa_full` false);
* compute: on a GPU the buffer llama.cpp reserves for the worst-case batch (the largest of the logits,
  attention and feed-forward stages, plus the CUDA runtime); on the CPU the pages a batch actually touches
  (allocated-but-untouched pages take no RAM), the tokenizer tables and the runtime;
* output: the logits buffer on the host, one row of n_vocab floats per sequence (llama.cpp reserves
  n_seq_max rows; bench asks for logits at each sequence's last token only, so all of them are written).

"Measured" for comparison (tests/test_planner.py): a process's peak RSS (VmHWM) minus its RSS just before
the model is loaded (the llama.cpp library already imported) — what loading the model, creating the context
and running a batch added.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from bench.errors import BenchError
from bench.runners.base import CONTEXT_ROUND, context_size, per_sequence_context
from bench.runners.llamacpp.shapes import ModelShape, weights_for
from bench.runners.memory import MIB, WORKER_PROCESS_BYTES, Budget, MemoryEstimate, fits
from bench.suite import KNOBS, Cell

MAX_CONTEXT = 2**20  # the largest context the planner reports (1M tokens)
SWA_PAD = 256  # llama.cpp pads a sliding-window cache to 256 cells
KQ_MASK_PAD = 64  # ... and the attention mask's token dimension to 64

# Calibrated on llama.cpp (llama-cpp-python 0.3.36, CPU) with SmolLM2-135M and Gemma-3-270M:
LLAMA_RUNTIME_BYTES = 14 * MIB  # llama/ggml contexts, graph metadata, thread pool
TOKENIZER_BYTES_PER_TOKEN = 120  # vocabulary tables, per vocabulary entry
LOGIT_BYTES = 4  # llama.cpp's output buffer holds f32 logits
# Not measurable here (no GPU): the usual CUDA context + cuBLAS workspace of a llama.cpp process.
CUDA_RUNTIME_BYTES = 384 * MIB
# Bytes per element of the KV cache types (ggml block size, block bytes).
KV_TYPE_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}

# The knobs' own defaults (bench.suite.knobs), for callers that estimate a shape without a cell.
DEFAULT_UBATCH: int = KNOBS["n_ubatch"].default
DEFAULT_KV_TYPE: str = KNOBS["kv_cache_type"].default
DEFAULT_FLASH_ATTN: str = KNOBS["flash_attn"].default
DEFAULT_SWA_FULL: bool = KNOBS["swa_full"].default


def _kv_element_bytes(kv_cache_type: str) -> float:
    if kv_cache_type not in KV_TYPE_BLOCKS:
        raise BenchError(f"unknown KV cache type {kv_cache_type!r}; known: {', '.join(KV_TYPE_BLOCKS)}")
    block, block_bytes = KV_TYPE_BLOCKS[kv_cache_type]
    return block_bytes / block


def kv_bytes_per_cell(shape: ModelShape, kv_cache_type: str, layers: range | None = None) -> float:
    """KV bytes one context position takes over `layers` (all by default)."""
    element = _kv_element_bytes(kv_cache_type)
    return sum(
        shape.n_kv_heads[i] * (shape.head_dim_k + shape.head_dim_v) * element
        for i in (layers if layers is not None else range(shape.n_layers))
    )


def _windowed(shape: ModelShape, layer: int, swa_full: bool) -> bool:
    """The layer keeps a window-sized cache: a sliding-window layer, unless swa_full asks for the full context."""
    return not swa_full and bool(shape.swa_layers) and bool(shape.swa_layers[layer]) and bool(shape.sliding_window)


def _kv_cells(shape: ModelShape, layer: int, n_ctx: int, n_ubatch: int, swa_full: bool, n_seq: int) -> int:
    """Cells of one layer's cache. A windowed sliding-window layer keeps each sequence's window (the unified
    cache holds all n_seq of them) plus one ubatch, padded: llama_kv_cache_iswa's size_swa."""
    if not _windowed(shape, layer, swa_full):
        return n_ctx
    window = -(-(shape.sliding_window * n_seq + n_ubatch) // SWA_PAD) * SWA_PAD
    return min(n_ctx, window)


def _attention_bytes(shape: ModelShape, tokens: int, n_kv: int, flash_attn: bool) -> int:
    """The attention stage's scratch: the mask, and without flash attention the KQ scores (f32)."""
    if flash_attn:
        return n_kv * (-(-tokens // KQ_MASK_PAD) * KQ_MASK_PAD) * 2
    return shape.n_heads * tokens * n_kv * 4 + n_kv * tokens * 4


def _reserved_compute_bytes(shape: ModelShape, n_ubatch: int, n_kv: int, flash_attn: bool, logits: bool) -> int:
    """What llama.cpp reserves on a GPU: its worst-case batch (n_ubatch tokens, all logits) at full context."""
    stages = [n_ubatch * 3 * shape.n_ff * 4, _attention_bytes(shape, n_ubatch, n_kv, flash_attn)]
    if logits:
        stages.append(shape.n_vocab * n_ubatch * 4)
    return max(stages) + 2 * shape.n_embd * n_ubatch * 4


def _touched_compute_bytes(shape: ModelShape, tokens: int, n_kv: int, flash_attn: bool) -> int:
    """What a CPU batch of `tokens` really touches: activations through one layer plus attention scratch."""
    activations = tokens * (4 * shape.n_ff + 2 * shape.n_embd) * 4
    return activations + _attention_bytes(shape, tokens, n_kv, flash_attn)


def offloaded_layers(shape: ModelShape, n_gpu_layers: int | None, device_kind: str) -> tuple[range, bool]:
    """(repeating layers on the GPU, output head on the GPU) by llama.cpp's rule."""
    if device_kind != "cuda" or not n_gpu_layers:
        return range(0), False
    if n_gpu_layers < 0 or n_gpu_layers > shape.n_layers:
        return range(shape.n_layers), True
    return range(shape.n_layers - (n_gpu_layers - 1), shape.n_layers), True


def estimate_memory(
    shape: ModelShape,
    *,
    n_ctx: int,
    batch_tokens: int,
    n_ubatch: int = DEFAULT_UBATCH,
    kv_cache_type: str = DEFAULT_KV_TYPE,
    flash_attn: str = DEFAULT_FLASH_ATTN,
    n_gpu_layers: int | None = 0,
    device_kind: str = "cpu",
    quantization: str | None = None,
    swa_full: bool = DEFAULT_SWA_FULL,
    repack: bool = True,
    n_seq: int = 1,
) -> MemoryEstimate:
    """Memory of the model at a context of n_ctx cells (shared by n_seq sequences) with batches of up to
    batch_tokens tokens.

    Weights count each tensor once where llama.cpp puts it. Compute counts everything else a process holds:
    compute buffers, the runtime and tokenizer tables, and the file pages loading leaves resident (the GGUF
    header, and the originals of tensors the CPU backend repacked into a copy).
    """
    weights = weights_for(shape, quantization)
    exact_file = quantization in (None, "", "source") or quantization == shape.file_type
    gpu_layers, output_on_gpu = offloaded_layers(shape, n_gpu_layers, device_kind)
    first_gpu = gpu_layers.start if gpu_layers else shape.n_layers  # offloaded layers are the last ones
    flash = flash_attn != "off"
    tokens = max(1, min(batch_tokens, n_ubatch))
    element = _kv_element_bytes(kv_cache_type)
    width = shape.head_dim_k + shape.head_dim_v
    kv_per_layer = [
        shape.n_kv_heads[i] * width * element * _kv_cells(shape, i, n_ctx, n_ubatch, swa_full, max(1, n_seq))
        for i in range(shape.n_layers)
    ]
    # What one more position adds: the layers whose cache spans the whole context (not a window-sized one).
    growth = [
        shape.n_kv_heads[i] * width * element * (not _windowed(shape, i, swa_full)) for i in range(shape.n_layers)
    ]
    weights_vram = sum(weights.layers[first_gpu:])
    weights_vram += weights.output + weights.output_copy if output_on_gpu else 0
    weights_ram = sum(weights.layers[:first_gpu]) + weights.input + (0 if output_on_gpu else weights.output)
    kv_vram = int(sum(kv_per_layer[first_gpu:]))
    kv_ram = int(sum(kv_per_layer)) - kv_vram
    growth_vram = float(sum(growth[first_gpu:]))
    loader_residue = shape.header_bytes
    if repack and exact_file and shape.repack_bytes:
        loader_residue += sum(shape.repack_bytes[:first_gpu])
    output = max(1, n_seq) * shape.n_vocab * LOGIT_BYTES  # host memory even when the head is on a GPU
    runtime = LLAMA_RUNTIME_BYTES + TOKENIZER_BYTES_PER_TOKEN * shape.n_vocab + output + loader_residue
    on_gpu = bool(gpu_layers) or output_on_gpu
    compute_vram = 0
    if on_gpu:
        compute_vram = CUDA_RUNTIME_BYTES + _reserved_compute_bytes(shape, n_ubatch, n_ctx, flash, output_on_gpu)
    if first_gpu > 0 or not on_gpu:
        compute_ram = runtime + _touched_compute_bytes(shape, tokens, n_ctx, flash)
    else:  # every layer on the GPU: the host only stages each batch's embeddings
        compute_ram = runtime + 2 * shape.n_embd * tokens * 4
    return MemoryEstimate(
        n_ctx=n_ctx,
        weights_ram=weights_ram,
        weights_vram=weights_vram,
        kv_ram=kv_ram,
        kv_vram=kv_vram,
        compute_ram=compute_ram,
        compute_vram=compute_vram,
        basis=shape.basis,
        kv_bytes_per_token=growth_vram if weights_vram or kv_vram else float(sum(growth)) - growth_vram,
    )


def cell_batch_tokens(cell: Cell) -> int:
    """The largest batch the cell sends: its prompts (every sequence's at once), or a chunk of its depth fill."""
    n_batch = min(cell.knob("n_batch"), context_size(cell))
    prompts = cell.setting("parallel") * cell.prompt_tokens
    return min(max(prompts, cell.depth, 1), n_batch, cell.knob("n_ubatch"))


def estimate_cell(cell: Cell, shape: ModelShape, quantization: str | None = None) -> MemoryEstimate:
    """The memory one llama.cpp cell needs (quantization: the weights' type when not the file's own)."""
    return estimate_memory(
        shape,
        n_ctx=context_size(cell),
        batch_tokens=cell_batch_tokens(cell),
        n_ubatch=cell.n_ubatch,
        kv_cache_type=cell.kv_cache_type,
        flash_attn=cell.flash_attn,
        n_gpu_layers=cell.n_gpu_layers,
        device_kind=cell.device_kind,
        quantization=quantization,
        repack=cell.repack,
        swa_full=bool(cell.setting("swa_full")),
        n_seq=cell.setting("parallel"),
    )


def max_context(
    shape: ModelShape,
    budget: Budget,
    *,
    quantization: str | None = None,
    n_ubatch: int = DEFAULT_UBATCH,
    kv_cache_type: str = DEFAULT_KV_TYPE,
    flash_attn: str = DEFAULT_FLASH_ATTN,
    n_gpu_layers: int | None = 0,
    device_kind: str = "cpu",
    swa_full: bool = DEFAULT_SWA_FULL,
    parallel: int = 1,
) -> int | None:
    """What fits per sequence: the largest context one of `parallel` sequences can hold (a multiple of 256, at
    most 1M) when all of them share one cache of parallel × that many cells, with full batches, sliding-window
    layers sized as swa_full says (a window per sequence when false); 0 if none does, None when the budget is
    unknown. `bench plan`'s largest context; the report's What fits and min_context ask max_context_for_row,
    the same question from a result row's estimate."""
    where_known = budget.vram_bytes if device_kind == "cuda" and n_gpu_layers else budget.ram_bytes
    if where_known is None:
        return None
    sequences = max(1, parallel)

    def ok(per_sequence: int) -> bool:
        estimate = estimate_memory(
            shape,
            n_ctx=per_sequence * sequences,
            batch_tokens=n_ubatch,
            n_ubatch=n_ubatch,
            kv_cache_type=kv_cache_type,
            flash_attn=flash_attn,
            n_gpu_layers=n_gpu_layers,
            device_kind=device_kind,
            quantization=quantization,
            swa_full=swa_full,
            n_seq=sequences,
        )
        return fits(estimate, budget)

    if not ok(CONTEXT_ROUND):
        return 0
    if ok(MAX_CONTEXT):
        return MAX_CONTEXT
    low, high = 1, MAX_CONTEXT // CONTEXT_ROUND  # in units of 256 tokens: low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if ok(middle * CONTEXT_ROUND) else (low, middle)
    return low * CONTEXT_ROUND


# ----------------------------------------------------------------------------------------- result rows


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or isinstance(value, str) and not value.strip():
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def max_context_for_row(row: Mapping[str, Any]) -> tuple[int | None, str]:
    """What fits per sequence on the row's device (its total memory), from the row's estimate: the largest
    context its KV cache can hold, shared by the row's `parallel` sequences (per_sequence_context), as
    max_context answers for `bench plan`. The report's What fits and min_context read it.

    What each more position adds is est_kv_bytes_per_token, the planner's own figure: it follows swa_full (a
    sliding-window layer with a window-sized cache adds nothing) and partial offload. Rows written before it
    use est_kv_bytes / n_ctx, exact only when every layer's cache spans the context (no sliding window, or
    swa_full true); it over-counts a windowed model's growth, so those rows under-state what fits. What does not
    grow is the rest of est_total_bytes (windowed caches included). Rows without an estimate fall back to the
    model's shape columns and file size. A row's blank knob (an old CSV) reads as its default.
    """
    kind = str(row.get("device_kind") or "cpu")
    ngl = _number(row, "n_gpu_layers")
    on_gpu = kind == "cuda" and ngl is not None and ngl != 0
    capacity = _number(row, "gpu_vram_total_bytes" if on_gpu else "ram_total_bytes")
    if capacity is None:
        return None, f"no {'VRAM' if on_gpu else 'RAM'} size recorded for this device"
    capacity -= 0 if on_gpu else WORKER_PROCESS_BYTES
    n_ubatch = int(_number(row, "n_ubatch") or DEFAULT_UBATCH)
    flash = str(row.get("flash_attn") or DEFAULT_FLASH_ATTN) != "off"
    n_heads = _number(row, "n_heads") or 1
    attention_per_token = -(-n_ubatch // KQ_MASK_PAD) * KQ_MASK_PAD * 2 if flash else (n_heads + 1) * n_ubatch * 4
    total, kv, n_ctx = _number(row, "est_total_bytes"), _number(row, "est_kv_bytes"), _number(row, "n_ctx")
    if total is not None and kv is not None and n_ctx:
        per_token = _number(row, "est_kv_bytes_per_token")
        per_token = kv / n_ctx if per_token is None else per_token
        fixed = total - per_token * n_ctx - attention_per_token * n_ctx
    else:
        shape_columns = [_number(row, k) for k in ("n_layers", "n_kv_heads", "head_dim")]
        weights = _number(row, "est_weights_bytes") or _number(row, "model_file_bytes")
        if None in shape_columns or weights is None:
            return None, "no memory estimate and no model shape in the row"
        n_layers, n_kv_heads, head_dim = (float(v) for v in shape_columns)  # type: ignore[arg-type]
        block, block_bytes = KV_TYPE_BLOCKS.get(str(row.get("kv_cache_type") or DEFAULT_KV_TYPE), (1, 2))
        element = block_bytes / block
        share = 1.0
        if on_gpu and 0 < (ngl or 0) <= n_layers:
            share = max(0.0, (ngl or 0) - 1) / n_layers
        per_token = n_layers * n_kv_heads * head_dim * 2 * element * share
        fixed = weights * (share if on_gpu else 1.0) + (CUDA_RUNTIME_BYTES if on_gpu else LLAMA_RUNTIME_BYTES)
    per_token += attention_per_token
    if per_token <= 0:
        return None, "the row's KV estimate is zero"
    sequences = int(_number(row, "parallel") or 1)
    tokens = per_sequence_context(max(0, int((capacity - fixed) // per_token)), sequences)
    return min(tokens, MAX_CONTEXT), "estimated"

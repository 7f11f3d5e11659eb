"""Memory planner: how much memory a cell needs, whether it fits the device, and the largest context that does.

A cell needs, on each memory (host RAM, GPU VRAM):

* weights: the model's tensors, split by llama.cpp's offload rule (token embeddings stay in RAM; with
  `n_gpu_layers = k` the output head and the last k-1 repeating layers go to the GPU; -1 offloads all);
* KV cache: per layer KV heads × (K + V head size) × bytes of the KV type × cells, where cells is the
  context, except for sliding-window layers when llama.cpp keeps a window-sized cache (`swa_full` false);
* compute: on a GPU the buffer llama.cpp reserves for the worst-case batch (the largest of the logits,
  attention and feed-forward stages, plus the CUDA runtime); on the CPU the pages a batch actually touches
  (allocated-but-untouched pages take no RAM), the tokenizer tables and the runtime.

Shapes come from the GGUF header when the file is on this machine (exact bytes per tensor), else from a
built-in table of known models (DeepSeek-R1-Distill-*) or the suite's `models[].metadata`, with weights from
parameters × the quantization type's bits per weight.

"Measured" for comparison (tests/test_planner.py): a process's peak RSS (VmHWM) minus its RSS just before
the model is loaded — what loading the model, creating the context and running a batch added.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.suite import Cell, DeviceSpec, Limits, ModelSpec, Suite

MIB = 2**20
GIB = 2**30
N_CTX_ROUND = 256  # the llama.cpp runner rounds contexts up to this (bench.runners.llamacpp.N_CTX_ROUND)
MAX_CONTEXT = 2**20  # the largest context the planner reports (1M tokens)
SWA_PAD = 256  # llama.cpp pads a sliding-window cache to 256 cells
KQ_MASK_PAD = 64  # ... and the attention mask's token dimension to 64
# bench's llama.cpp runner keeps llama_context_default_params().swa_full, which is true: sliding-window layers
# then get a full-size cache (tests/test_planner.py checks this against llama-cpp-python).
RUNNER_SWA_FULL = True

# Calibrated on llama.cpp (llama-cpp-python 0.3.36, CPU) with SmolLM2-135M and Gemma-3-270M:
LLAMA_RUNTIME_BYTES = 14 * MIB  # llama/ggml contexts, graph metadata, thread pool
TOKENIZER_BYTES_PER_TOKEN = 124  # vocabulary tables + one row of output logits, per vocabulary entry
# Not measurable here (no GPU): the usual CUDA context + cuBLAS workspace of a llama.cpp process.
CUDA_RUNTIME_BYTES = 384 * MIB
# The Python side of a bench worker (interpreter, numpy, pandas, the llama.cpp library): ~55-100 MiB.
WORKER_PROCESS_BYTES = 96 * MIB

# Bytes per element of the KV cache types (ggml block size, block bytes).
KV_TYPE_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4), "f16": (1, 2), "bf16": (1, 2), "q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20),
    "iq4_nl": (32, 18), "q5_0": (32, 22), "q5_1": (32, 24),
}
# Whole-file average bits per weight of llama.cpp's quantization mixes (higher-precision output and
# embedding tensors included): from the sizes `llama-quantize --help` lists for Llama-3-8B (8.03 B
# parameters), and the nominal rate for the IQ/TQ types it lists by bpw.
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.57, "Q5_K_M": 5.70, "Q5_K_S": 5.57,
    "Q5_1": 6.04, "Q5_0": 5.57, "Q4_K_M": 4.90, "Q4_K_S": 4.67, "Q4_1": 5.11, "Q4_0": 4.64, "IQ4_NL": 4.50,
    "IQ4_XS": 4.25, "Q3_K_L": 4.31, "Q3_K_M": 4.00, "Q3_K_S": 3.65, "IQ3_M": 3.66, "IQ3_S": 3.44,
    "IQ3_XS": 3.30, "IQ3_XXS": 3.06, "Q2_K": 3.17, "Q2_K_S": 3.17, "IQ2_M": 2.70, "IQ2_S": 2.50,
    "IQ2_XS": 2.31, "IQ2_XXS": 2.06, "IQ1_M": 1.75, "IQ1_S": 1.56, "TQ1_0": 1.69, "TQ2_0": 2.06,
}
# Tensor types llama.cpp's CPU backend repacks into its own layout at load (knobs.repack): the copy comes on
# top of the file pages read to make it (x86 AVX2 with this llama.cpp; ARM repacks a similar set).
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
# Architectures whose sliding-window layers follow a fixed period when the GGUF gives no pattern
# (llama.cpp's set_swa_pattern: every n-th layer is a full-attention layer).
SWA_PERIOD_BY_ARCH = {"gemma2": 2, "gemma3": 6, "cohere2": 4}


# ----------------------------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class ModelShape:
    """What the memory of a model depends on. Bytes are exact when read from a file (of `file_type`)."""

    name: str
    basis: str  # where the shape came from, said in plan output and skip reasons
    arch: str
    n_layers: int
    n_heads: int
    n_kv_heads: tuple[int, ...]  # per layer
    head_dim_k: int
    head_dim_v: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int | None
    layer_params: tuple[int, ...]  # elements per repeating layer
    input_params: int  # token embeddings and other non-layer tensors: stay in RAM
    output_params: int  # output head and norm (the norm only when the head is tied to the embeddings)
    embedding_params: int  # token_embd alone: a tied head is a copy of it on the GPU when offloaded
    tied_embeddings: bool
    sliding_window: int | None = None
    swa_layers: tuple[bool, ...] = ()
    file_type: str = ""
    layer_bytes: tuple[int, ...] | None = None  # exact, for file_type
    input_bytes: int | None = None
    output_bytes: int | None = None
    embedding_bytes: int | None = None
    repack_bytes: tuple[int, ...] = ()  # per layer: tensors the CPU backend copies into a repacked layout
    header_bytes: int = 0  # GGUF metadata (vocabulary strings ...) read through the mapping

    @property
    def n_params(self) -> int:
        return sum(self.layer_params) + self.input_params + self.output_params


@dataclass(frozen=True)
class Weights:
    """Tensor bytes by where llama.cpp may put them."""

    layers: tuple[int, ...]
    input: int  # always in RAM
    output: int  # follows the output layer
    output_copy: int  # a tied head: the embeddings again, only when the output layer is on the GPU


def weights_for(shape: ModelShape, quantization: str | None) -> Weights:
    """Tensor bytes of the model at `quantization`: exact for the file's own type, else params × bpw."""
    same = quantization in (None, "", "source") or quantization == shape.file_type
    if same and shape.layer_bytes is not None and shape.input_bytes is not None \
            and shape.output_bytes is not None and shape.embedding_bytes is not None:
        return Weights(shape.layer_bytes, shape.input_bytes, shape.output_bytes,
                       shape.embedding_bytes if shape.tied_embeddings else 0)
    quant = shape.file_type if same else str(quantization)
    if quant not in BITS_PER_WEIGHT:
        raise BenchError(f"no bits-per-weight figure for quantization {quant!r}; known: {', '.join(BITS_PER_WEIGHT)}")
    bpw = BITS_PER_WEIGHT[quant]

    def size(params: int) -> int:
        return int(params * bpw / 8)

    return Weights(tuple(size(p) for p in shape.layer_params), size(shape.input_params), size(shape.output_params),
                   size(shape.embedding_params) if shape.tied_embeddings else 0)


def _per_layer(value: Any, n_layers: int, default: int) -> tuple[int, ...]:
    if isinstance(value, list) and value:
        return tuple(int(v) for v in value[:n_layers]) + (int(value[-1]),) * max(0, n_layers - len(value))
    return (int(value) if value is not None else default,) * n_layers


def _swa_layers(arch: str, pattern: Any, window: int | None, n_layers: int) -> tuple[bool, ...]:
    if not window:
        return (False,) * n_layers
    if isinstance(pattern, list) and pattern:
        return tuple(bool(pattern[i % len(pattern)]) for i in range(n_layers))
    period = int(pattern) if isinstance(pattern, int | float) and pattern else SWA_PERIOD_BY_ARCH.get(arch, 0)
    if period <= 0:
        return (True,) * n_layers
    return tuple(i % period < period - 1 for i in range(n_layers))


def shape_from_gguf(path: Path) -> ModelShape:
    """The model's shape and exact tensor sizes from its GGUF header."""
    from bench.models import file_type_name, read_gguf_header

    header = read_gguf_header(path)
    arch = str(header.get("general.architecture") or "")

    def arch_value(name: str) -> Any:
        return header.get(f"{arch}.{name}")

    n_layers = int(arch_value("block_count") or 0)
    if n_layers <= 0:
        raise BenchError(f"{path}: the GGUF header has no {arch}.block_count; cannot plan its memory")
    n_heads_raw = arch_value("attention.head_count")
    n_heads = max(n_heads_raw) if isinstance(n_heads_raw, list) else int(n_heads_raw or 1)
    n_embd = int(arch_value("embedding_length") or 0)
    head_dim_k = int(arch_value("attention.key_length") or (n_embd // n_heads if n_heads else 0))
    head_dim_v = int(arch_value("attention.value_length") or head_dim_k)
    n_ff_raw = arch_value("feed_forward_length")
    n_ff = max(n_ff_raw) if isinstance(n_ff_raw, list) else int(n_ff_raw or 4 * n_embd)
    layer_params, layer_bytes, repack_bytes = [0] * n_layers, [0] * n_layers, [0] * n_layers
    input_params = input_bytes = output_params = output_bytes = embedding_params = embedding_bytes = 0
    n_vocab, tied = 0, True
    layer_name = re.compile(r"^blk\.(\d+)\.")
    for tensor in header.tensors:
        match = layer_name.match(tensor.name)
        if match and int(match.group(1)) < n_layers:
            layer = int(match.group(1))
            layer_params[layer] += tensor.n_elements
            layer_bytes[layer] += tensor.n_bytes
            if tensor.type_name in REPACKED_TYPES and len(tensor.shape) == 2:
                repack_bytes[layer] += tensor.n_bytes
        elif tensor.name.startswith("output"):  # output.weight, output_norm.weight
            output_params += tensor.n_elements
            output_bytes += tensor.n_bytes
            tied = tied and tensor.name != "output.weight"
        else:
            input_params += tensor.n_elements
            input_bytes += tensor.n_bytes
            if tensor.name == "token_embd.weight":
                n_vocab = tensor.shape[-1]
                embedding_params, embedding_bytes = tensor.n_elements, tensor.n_bytes
    tokens = header.get("tokenizer.ggml.tokens")
    n_vocab = n_vocab or int(arch_value("vocab_size") or 0) or (tokens if isinstance(tokens, int) else 0)
    window = arch_value("attention.sliding_window")
    window = int(window) if window else None
    return ModelShape(
        name=path.name, basis=f"GGUF header of {path.name}", arch=arch, n_layers=n_layers,
        n_heads=n_heads, n_kv_heads=_per_layer(arch_value("attention.head_count_kv"), n_layers, n_heads),
        head_dim_k=head_dim_k, head_dim_v=head_dim_v, n_embd=n_embd, n_ff=n_ff, n_vocab=n_vocab,
        n_ctx_train=int(arch_value("context_length") or 0) or None, layer_params=tuple(layer_params),
        input_params=input_params, output_params=output_params, embedding_params=embedding_params,
        tied_embeddings=tied, sliding_window=window,
        swa_layers=_swa_layers(arch, arch_value("attention.sliding_window_pattern"), window, n_layers),
        file_type=file_type_name(header.get("general.file_type")), layer_bytes=tuple(layer_bytes),
        input_bytes=input_bytes, output_bytes=output_bytes, embedding_bytes=embedding_bytes,
        repack_bytes=tuple(repack_bytes), header_bytes=header.data_offset,
    )


@dataclass(frozen=True)
class KnownModel:
    """A model's shape from its published config.json, for planning without the file."""

    name: str
    pattern: str  # regex over the suite's model id, references and metadata name (lower case)
    arch: str
    n_params: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    tied_embeddings: bool = False


# From each model's config.json on the Hugging Face hub (deepseek-ai/DeepSeek-R1-Distill-*); parameter
# counts from its safetensors index.
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("DeepSeek-R1-Distill-Qwen-1.5B", r"r1.?distill.?qwen.?1[._]5b", "qwen2", 1_777_088_000,
               28, 12, 2, 128, 1536, 8960, 151936, 131072),
    KnownModel("DeepSeek-R1-Distill-Qwen-7B", r"r1.?distill.?qwen.?7b", "qwen2", 7_615_616_512,
               28, 28, 4, 128, 3584, 18944, 152064, 131072),
    KnownModel("DeepSeek-R1-Distill-Qwen-14B", r"r1.?distill.?qwen.?14b", "qwen2", 14_770_033_664,
               48, 40, 8, 128, 5120, 13824, 152064, 131072),
    KnownModel("DeepSeek-R1-Distill-Qwen-32B", r"r1.?distill.?qwen.?32b", "qwen2", 32_763_876_352,
               64, 40, 8, 128, 5120, 27648, 152064, 131072),
    KnownModel("DeepSeek-R1-Distill-Llama-8B", r"r1.?distill.?llama.?8b", "llama", 8_030_261_248,
               32, 32, 8, 128, 4096, 14336, 128256, 131072),
    KnownModel("DeepSeek-R1-Distill-Llama-70B", r"r1.?distill.?llama.?70b", "llama", 70_553_706_496,
               80, 64, 8, 128, 8192, 28672, 128256, 131072),
)


def _metadata_number(metadata: Mapping[str, Any], key: str) -> float | None:
    value = metadata.get(key)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BenchError(f"models[].metadata.{key}: expected a number, got {value!r}") from None


def known_model(model: ModelSpec) -> KnownModel | None:
    """The built-in shape a suite model matches by its id, references or metadata name."""
    texts = [model.id, model.source or "", *model.files.values(),
             *(str(model.metadata.get(k, "")) for k in ("name", "hf_repo", "family"))]
    haystack = " ".join(texts).lower()
    return next((k for k in KNOWN_MODELS if re.search(k.pattern, haystack)), None)


def shape_from_suite(model: ModelSpec) -> ModelShape | None:
    """A shape without the file: the known-models table, with `models[].metadata` taking precedence.

    Metadata keys: params_b (billions), n_layers, n_heads, n_kv_heads, head_dim, n_embd, n_ff, n_vocab,
    n_ctx_train. Without a known model, params_b, n_layers, n_kv_heads and head_dim are required.
    """
    known = known_model(model)
    meta = {k: _metadata_number(model.metadata, k) for k in
            ("params_b", "n_layers", "n_heads", "n_kv_heads", "head_dim", "n_embd", "n_ff", "n_vocab", "n_ctx_train")}
    if known is None and None in (meta["params_b"], meta["n_layers"], meta["n_kv_heads"], meta["head_dim"]):
        return None

    def pick(key: str, fallback: float) -> int:
        value = meta[key]
        return int(value) if value is not None else int(fallback)

    n_layers = pick("n_layers", known.n_layers if known else 0)
    head_dim = pick("head_dim", known.head_dim if known else 0)
    n_kv_heads = pick("n_kv_heads", known.n_kv_heads if known else 0)
    n_heads = pick("n_heads", known.n_heads if known else n_kv_heads)
    n_embd = pick("n_embd", known.n_embd if known else n_heads * head_dim)
    n_vocab = pick("n_vocab", known.n_vocab if known else 32000)
    params_b = meta["params_b"]
    n_params = int(params_b * 1e9) if params_b is not None else known.n_params  # type: ignore[union-attr]
    tied = known.tied_embeddings if known else False
    embeddings = n_vocab * n_embd
    output = 0 if tied else embeddings
    per_layer = max(0, n_params - embeddings - output) // max(1, n_layers)
    basis = f"known shape: {known.name}" if known else "suite metadata"
    if known and any(meta[k] is not None for k in meta):
        basis += " + suite metadata"
    return ModelShape(
        name=known.name if known else model.id, basis=basis, arch=known.arch if known else "",
        n_layers=n_layers, n_heads=n_heads, n_kv_heads=(n_kv_heads,) * n_layers, head_dim_k=head_dim,
        head_dim_v=head_dim, n_embd=n_embd, n_ff=pick("n_ff", known.n_ff if known else 4 * n_embd), n_vocab=n_vocab,
        n_ctx_train=pick("n_ctx_train", known.n_ctx_train if known else 0) or None,
        layer_params=(per_layer,) * n_layers, input_params=embeddings, output_params=output,
        embedding_params=embeddings, tied_embeddings=tied,
    )


# --------------------------------------------------------------------------------------------- estimate


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


def kv_bytes_per_cell(shape: ModelShape, kv_cache_type: str, layers: range | None = None) -> float:
    """KV bytes one context position takes over `layers` (all by default)."""
    if kv_cache_type not in KV_TYPE_BLOCKS:
        raise BenchError(f"unknown KV cache type {kv_cache_type!r}; known: {', '.join(KV_TYPE_BLOCKS)}")
    block, block_bytes = KV_TYPE_BLOCKS[kv_cache_type]
    element = block_bytes / block
    return sum(shape.n_kv_heads[i] * (shape.head_dim_k + shape.head_dim_v) * element
               for i in (layers if layers is not None else range(shape.n_layers)))


def _kv_cells(shape: ModelShape, layer: int, n_ctx: int, n_ubatch: int, swa_full: bool) -> int:
    if swa_full or not shape.swa_layers or not shape.swa_layers[layer] or not shape.sliding_window:
        return n_ctx
    window = -(-(shape.sliding_window + n_ubatch) // SWA_PAD) * SWA_PAD
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
    shape: ModelShape, *, n_ctx: int, batch_tokens: int, n_ubatch: int = 512, kv_cache_type: str = "f16",
    flash_attn: str = "auto", n_gpu_layers: int | None = 0, device_kind: str = "cpu",
    quantization: str | None = None, swa_full: bool = RUNNER_SWA_FULL, repack: bool = True,
) -> MemoryEstimate:
    """Memory of the model at a context of n_ctx cells with batches of up to batch_tokens tokens.

    Weights count each tensor once where llama.cpp puts it. Compute counts everything else a process holds:
    compute buffers, the runtime and tokenizer tables, and the file pages loading leaves resident (the GGUF
    header, and the originals of tensors the CPU backend repacked into a copy).
    """
    weights = weights_for(shape, quantization)
    exact_file = quantization in (None, "", "source") or quantization == shape.file_type
    gpu_layers, output_on_gpu = offloaded_layers(shape, n_gpu_layers, device_kind)
    on_gpu = set(gpu_layers)
    on_cpu = [i for i in range(shape.n_layers) if i not in on_gpu]
    flash = flash_attn != "off"
    tokens = max(1, min(batch_tokens, n_ubatch))
    kv_per_layer = [kv_bytes_per_cell(shape, kv_cache_type, range(i, i + 1))
                    * _kv_cells(shape, i, n_ctx, n_ubatch, swa_full) for i in range(shape.n_layers)]
    weights_vram = sum(weights.layers[i] for i in on_gpu)
    weights_vram += weights.output + weights.output_copy if output_on_gpu else 0
    weights_ram = sum(weights.layers[i] for i in on_cpu) + weights.input + (0 if output_on_gpu else weights.output)
    kv_vram = int(sum(kv_per_layer[i] for i in on_gpu))
    kv_ram = int(sum(kv_per_layer)) - kv_vram
    loader_residue = shape.header_bytes
    if repack and exact_file and shape.repack_bytes:
        loader_residue += sum(shape.repack_bytes[i] for i in on_cpu)
    runtime = LLAMA_RUNTIME_BYTES + TOKENIZER_BYTES_PER_TOKEN * shape.n_vocab + loader_residue
    compute_vram = 0
    if on_gpu or output_on_gpu:
        compute_vram = CUDA_RUNTIME_BYTES + _reserved_compute_bytes(shape, n_ubatch, n_ctx, flash, output_on_gpu)
    if on_cpu or not (on_gpu or output_on_gpu):
        compute_ram = runtime + _touched_compute_bytes(shape, tokens, n_ctx, flash)
    else:  # every layer on the GPU: the host only stages each batch's embeddings
        compute_ram = runtime + 2 * shape.n_embd * tokens * 4
    return MemoryEstimate(n_ctx=n_ctx, weights_ram=weights_ram, weights_vram=weights_vram, kv_ram=kv_ram,
                          kv_vram=kv_vram, compute_ram=compute_ram, compute_vram=compute_vram,
                          basis=shape.basis)


def cell_context(cell: Cell) -> int:
    """The context the llama.cpp runner opens for a cell (depth + prompt + generated, rounded up)."""
    needed = cell.depth + cell.prompt_tokens + cell.gen_tokens + 1
    return -(-needed // N_CTX_ROUND) * N_CTX_ROUND


def cell_batch_tokens(cell: Cell) -> int:
    """The largest batch the cell sends: its prompt, or a chunk of its depth fill."""
    n_batch = min(cell.n_batch or 2048, cell_context(cell))
    return min(max(cell.prompt_tokens, cell.depth, 1), n_batch, cell.n_ubatch or 512)


def estimate_cell(cell: Cell, shape: ModelShape, quantization: str | None = None) -> MemoryEstimate:
    """The memory one llama.cpp cell needs (quantization: the weights' type when not the file's own)."""
    return estimate_memory(
        shape, n_ctx=cell_context(cell), batch_tokens=cell_batch_tokens(cell), n_ubatch=cell.n_ubatch or 512,
        kv_cache_type=cell.kv_cache_type or "f16", flash_attn=cell.flash_attn or "auto",
        n_gpu_layers=cell.n_gpu_layers, device_kind=cell.device_kind, quantization=quantization,
        repack=cell.repack is not False,
    )


# ------------------------------------------------------------------------------------------------ budget


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
    if ram is not None and limit_gb and limit_gb * GIB < ram:  # the worker cannot use more than its limit
        ram, source = int(limit_gb * GIB), f"the suite's limits.memory_limit_gb ({limit_gb:g})"
    declared = int(device.memory_gb * GIB) if device.memory_gb else None
    if device.kind == "cpu":
        return Budget(ram, None, source)
    if 0 <= device.index < len(fingerprint.gpus):
        return Budget(ram, fingerprint.gpus[device.index].vram_free_bytes, "free now")
    if declared:  # planning for a card this machine does not have: its host RAM is unknown
        return Budget(None, declared, f"memory_gb: {device.memory_gb:g} in the suite")
    return Budget(None, None, "unknown: the device is absent (set devices[].memory_gb to plan for it)")


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / GIB:.2f} GiB"


def fit_problem(estimate: MemoryEstimate, budget: Budget) -> str:
    """Why the cell will not fit (with the numbers), or '' when it fits or the budget is unknown."""
    problems = []
    if (estimate.weights_vram or estimate.kv_vram) and budget.vram_bytes is not None \
            and estimate.vram_bytes > budget.vram_bytes:
        problems.append(
            f"needs ~{gib(estimate.vram_bytes)} VRAM (weights {gib(estimate.weights_vram)} + KV {gib(estimate.kv_vram)}"
            f" + compute {gib(estimate.compute_vram)}) but {gib(budget.vram_bytes)} is {budget.source}")
    if budget.ram_bytes is not None and estimate.ram_bytes + WORKER_PROCESS_BYTES > budget.ram_bytes:
        problems.append(
            f"needs ~{gib(estimate.ram_bytes + WORKER_PROCESS_BYTES)} RAM (weights {gib(estimate.weights_ram)} + KV "
            f"{gib(estimate.kv_ram)} + compute {gib(estimate.compute_ram)} + worker {gib(WORKER_PROCESS_BYTES)}) but "
            f"{gib(budget.ram_bytes)} is {budget.source}")
    return "; ".join(problems)


def fits(estimate: MemoryEstimate, budget: Budget) -> bool:
    return not fit_problem(estimate, budget)


def max_context(shape: ModelShape, budget: Budget, *, quantization: str | None = None, n_ubatch: int = 512,
                kv_cache_type: str = "f16", flash_attn: str = "auto", n_gpu_layers: int | None = 0,
                device_kind: str = "cpu") -> int | None:
    """The largest context (a multiple of 256, at most 1M) that fits the budget with full batches; 0 if
    none does, None when the budget is unknown."""
    where_known = budget.vram_bytes if device_kind == "cuda" and n_gpu_layers else budget.ram_bytes
    if where_known is None:
        return None

    def ok(n_ctx: int) -> bool:
        estimate = estimate_memory(shape, n_ctx=n_ctx, batch_tokens=n_ubatch, n_ubatch=n_ubatch,
                                   kv_cache_type=kv_cache_type, flash_attn=flash_attn, n_gpu_layers=n_gpu_layers,
                                   device_kind=device_kind, quantization=quantization)
        return fits(estimate, budget)

    if not ok(N_CTX_ROUND):
        return 0
    if ok(MAX_CONTEXT):
        return MAX_CONTEXT
    low, high = 1, MAX_CONTEXT // N_CTX_ROUND  # in units of 256 tokens: low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if ok(middle * N_CTX_ROUND) else (low, middle)
    return low * N_CTX_ROUND


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
    """The largest context that fits the row's device (its total memory), from the row's estimate.

    est_total_bytes − est_kv_bytes is what does not grow with the context; est_kv_bytes / n_ctx is what
    each token adds (exact for sliding-window and partly offloaded models). Rows without an estimate fall
    back to the model's shape columns and file size.
    """
    kind = str(row.get("device_kind") or "cpu")
    ngl = _number(row, "n_gpu_layers")
    on_gpu = kind == "cuda" and ngl is not None and ngl != 0
    capacity = _number(row, "gpu_vram_total_bytes" if on_gpu else "ram_total_bytes")
    if capacity is None:
        return None, f"no {'VRAM' if on_gpu else 'RAM'} size recorded for this device"
    capacity -= 0 if on_gpu else WORKER_PROCESS_BYTES
    n_ubatch = int(_number(row, "n_ubatch") or 512)
    flash = str(row.get("flash_attn") or "auto") != "off"
    n_heads = _number(row, "n_heads") or 1
    attention_per_token = (-(-n_ubatch // KQ_MASK_PAD) * KQ_MASK_PAD * 2 if flash else (n_heads + 1) * n_ubatch * 4)
    total, kv, n_ctx = _number(row, "est_total_bytes"), _number(row, "est_kv_bytes"), _number(row, "n_ctx")
    if total is not None and kv is not None and n_ctx:
        per_token = kv / n_ctx
        fixed = total - kv - attention_per_token * n_ctx
    else:
        shape_columns = [_number(row, k) for k in ("n_layers", "n_kv_heads", "head_dim")]
        weights = _number(row, "est_weights_bytes") or _number(row, "model_file_bytes")
        if None in shape_columns or weights is None:
            return None, "no memory estimate and no model shape in the row"
        n_layers, n_kv_heads, head_dim = (float(v) for v in shape_columns)  # type: ignore[arg-type]
        block, block_bytes = KV_TYPE_BLOCKS.get(str(row.get("kv_cache_type") or "f16"), (1, 2))
        share = 1.0
        if on_gpu and 0 < (ngl or 0) <= n_layers:
            share = max(0.0, (ngl or 0) - 1) / n_layers
        per_token = n_layers * n_kv_heads * head_dim * 2 * block_bytes / block * share
        fixed = weights * (share if on_gpu else 1.0) + (CUDA_RUNTIME_BYTES if on_gpu else LLAMA_RUNTIME_BYTES)
    per_token += attention_per_token
    if per_token <= 0:
        return None, "the row's KV estimate is zero"
    tokens = int((capacity - fixed) // per_token) // N_CTX_ROUND * N_CTX_ROUND
    return max(0, min(tokens, MAX_CONTEXT)), "estimated"


# ---------------------------------------------------------------------------------------- planning


@dataclass
class CellMemory:
    """The planner's word on one cell: its estimate against its budget, or why there is none."""

    estimate: MemoryEstimate | None = None
    budget: Budget | None = None
    shape: ModelShape | None = None
    quantization: str | None = None  # the weights' type when estimated from another file's shape
    note: str = ""  # why there is no estimate
    fetch: str = ""  # the model file is not on this machine yet: what `bench run` will have to get

    @property
    def problem(self) -> str:
        return fit_problem(self.estimate, self.budget) if self.estimate and self.budget else ""

    def row_fields(self) -> dict[str, Any]:
        if self.estimate is None:
            return {}
        estimate = self.estimate
        return {
            "est_weights_bytes": estimate.weights_bytes, "est_kv_bytes": estimate.kv_bytes,
            "est_compute_bytes": estimate.compute_bytes, "est_total_bytes": estimate.total_bytes,
            "est_device_free_bytes": self.budget.on(estimate.where) if self.budget else None,
        }

    def skip_reason(self) -> str:
        problem = self.problem
        if not problem:
            return ""
        return f"will not fit (memory planner, {self.estimate.basis if self.estimate else ''}): {problem}; " \
               "run anyway with --force"


@dataclass
class ShapeSource:
    shape: ModelShape | None
    quantization: str | None = None  # None: the shape's own bytes are exact
    note: str = ""
    fetch: str = ""


@dataclass
class ShapeFinder:
    """Finds each model × quantization's shape without downloading or building anything."""

    suite: Suite
    _found: dict[tuple[str, str], ShapeSource] = field(default_factory=dict)

    def find(self, model_id: str, quantization: str) -> ShapeSource:
        key = (model_id, quantization)
        if key not in self._found:
            try:
                self._found[key] = self._find(self.suite.model(model_id), quantization)
            except BenchError as exc:
                self._found[key] = ShapeSource(None, note=exc.message)
        return self._found[key]

    def _find(self, model: ModelSpec, quantization: str) -> ShapeSource:
        from bench.models import cell_model_reference, local_model_file, quant_type_from_name
        from bench.runners.llamacpp.spec import needs_derivation

        if needs_derivation(model, quantization):
            from bench.runners.llamacpp.quantize import cached_derived_file

            source = local_model_file(model.source) if model.source else None
            if source is not None:
                built = cached_derived_file(source, quantization)
                if built is not None:
                    return ShapeSource(shape_from_gguf(built))
                return ShapeSource(shape_from_gguf(source), quantization)
            return self._from_suite(model, quantization, f"its source {model.source} is not on this machine")
        reference = cell_model_reference(model, quantization)
        local = local_model_file(reference)
        if local is not None:
            return ShapeSource(shape_from_gguf(local))
        quant = quantization if quantization in BITS_PER_WEIGHT else quant_type_from_name(reference)
        if quantization == "source" and model.source_quantization:
            quant = model.source_quantization
        return self._from_suite(model, quant, f"{reference} is not on this machine")

    @staticmethod
    def _from_suite(model: ModelSpec, quant: str, why: str) -> ShapeSource:
        fetch = f"{why}: `bench run` downloads it (or builds it), and skips the cell if it cannot"
        shape = shape_from_suite(model)
        if shape is None:
            return ShapeSource(None, note=f"no estimate: {why}, its shape is not built in and the suite's "
                                          "models[].metadata lacks params_b, n_layers, n_kv_heads, head_dim")
        if quant not in BITS_PER_WEIGHT:
            return ShapeSource(None, note=f"no estimate: {why} and its quantization is unknown "
                                          "(name it in models[].files or source_quantization)")
        return ShapeSource(replace(shape, file_type=quant), quant, fetch=fetch)


def plan_memory(suite: Suite, cells: list[Cell], fingerprint: Fingerprint) -> dict[str, CellMemory]:
    """Each llama.cpp cell's estimate against its device's budget, by cell id."""
    finder = ShapeFinder(suite)
    budgets = {d.id: device_budget(fingerprint, d, suite.limits) for d in suite.devices}
    return {cell.cell_id: memory_for(cell, finder.find(cell.model_id, cell.quantization), budgets[cell.device_id])
            for cell in cells}


def memory_for(cell: Cell, found: ShapeSource, budget: Budget) -> CellMemory:
    if found.shape is None:
        return CellMemory(note=found.note, budget=budget)
    try:
        estimate = estimate_cell(cell, found.shape, found.quantization)
    except BenchError as exc:
        return CellMemory(note=f"no estimate: {exc.message}", budget=budget, fetch=found.fetch)
    return CellMemory(estimate=estimate, budget=budget, shape=found.shape, quantization=found.quantization,
                      fetch=found.fetch)


def file_memory(cells: list[Cell], path: Path, suite: Suite, fingerprint: Fingerprint) -> dict[str, CellMemory]:
    """Per cell id, the estimate from the GGUF file the cells will load (exact tensor sizes)."""
    try:
        found = ShapeSource(shape_from_gguf(path))
    except BenchError as exc:
        found = ShapeSource(None, note=f"no estimate: {exc.message}")
    budgets = {d.id: device_budget(fingerprint, d, suite.limits) for d in suite.devices}
    return {cell.cell_id: memory_for(cell, found, budgets[cell.device_id]) for cell in cells}

"""Write a GGUF with a known model's layout and random weights, one tensor at a time.

The layout is what llama.cpp's convert_hf_to_gguf.py writes for the architecture with `--outtype f16`:
the same tensor names (gguf-py's TENSOR_NAMES), shapes and types (2-D weights F16; norms, biases, the
MoE router and rope_freqs F32), and the metadata keys llama.cpp reads when it loads the model. The
tokenizer has the vocabulary size and the kind of the model's own, because llama.cpp's memory for it depends
on both: SentencePiece-style ("llama": <unk>, <s>, </s>, the byte tokens <0x00>..<0xFF>, fillers), or byte-level
BPE ("gpt2": the 256 byte tokens, merged tokens, and as many merge rules as the real vocabulary has).

F16/F32 weights are drawn once into a small pool of normal values (std 0.02, the usual initializer range,
so activations stay finite through any depth; norms are 1) and each tensor is written as slices of that pool
at random offsets. A quantized tensor (its type chosen by llama.cpp's quantizer on a proxy, see
bench.runners.llamacpp.synthetic) is written as rows drawn at random from the proxy's quantized rows, each block's
scale then spread as real weights' are (BLOCK_SCALE_SPREAD_LOG2: decode speed depends on it). Either way writing
is disk-bound, and memory stays at the pool plus one write chunk (and one proxy tensor) whatever the model size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

import numpy as np
from gguf import (
    GGML_QUANT_SIZES,
    GGML_QUANT_VERSION,
    GGUF_DEFAULT_ALIGNMENT,
    MODEL_TENSOR,
    TENSOR_NAMES,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    RopeScalingType,
    TokenType,
)

from bench.models.catalog import TokenizerSpec, TransformerShape

WEIGHT_STD = 0.02
POOL_VALUES = 1 << 22  # 4M values (8 MiB of F16): slices of it at random offsets make every weight tensor
CHUNK_VALUES = 1 << 20  # written 1M values (2 MiB) at a time
# Bumped whenever the bytes written for the same shape change, so a cached synthetic model is rebuilt.
LAYOUT_VERSION = 2

# Spread of the quantized blocks' scales, in log2 units: per block, and per tensor (on top of what random
# normal rows give by themselves, 0.27 for 32-value blocks and 0.15 for 256-value K-quant super-blocks).
# Why it matters: on x86 ggml converts every block's FP16 scale through a 256 KiB lookup table
# (GGML_CPU_FP16_TO_FP32 -> ggml_table_f32_f16), so the spread of the scales sets how much of that table the
# dot products touch, and decode speed follows: the real SmolLM2 Q8_0 with the synthetic file's scales decoded
# 10 % faster, the synthetic file with the real scales 14 % slower (llama-bench, 8 interleaved rounds).
# Measured on the real files: per-tensor spread 0.29-0.54 (SmolLM2 Q8_0 0.40; Gemma-3-270M Q8_0 0.34, Q5_0
# 0.54, Q4_K 0.41, Q6_K 0.29), spread of the tensors' medians 0.04-0.40. 0.32 per block brings both block sizes
# to about 0.42 and 0.35.
BLOCK_SCALE_SPREAD_LOG2 = 0.32
TENSOR_SCALE_SPREAD_LOG2 = 0.3
# Byte offsets of the FP16 scale fields (d, and the min/dmin beside it) in one block: ggml-common.h's
# block_q4_0 ... block_q6_K, block_iq4_nl, block_iq4_xs. Types not listed keep the proxy's scales.
BLOCK_SCALE_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]  # numpy order, as the converter hands it to GGUFWriter (rows first)
    type_name: str  # ggml type: F16 or F32 as converted, or the type llama.cpp's quantizer chose
    fill: str  # "normal", "ones" or "rope_freqs": the values of the converted (F16/F32) tensor
    native_type: str = ""  # the converted type, when type_name is the quantizer's

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[self.type_name]]
        return self.n_elements // block * block_bytes

    @property
    def row_bytes(self) -> int:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[self.type_name]]
        return self.shape[-1] // block * block_bytes

    @property
    def quantized(self) -> bool:
        """True when the data are the quantizer's rows rather than converted values."""
        return bool(self.native_type) and self.native_type != self.type_name


def _name(kind: MODEL_TENSOR, suffix: str = "weight", layer: int | None = None) -> str:
    base = TENSOR_NAMES[kind].format(bid=layer) if layer is not None else TENSOR_NAMES[kind]
    return f"{base}.{suffix}"


def _layer_tensors(shape: TransformerShape, layer: int) -> Iterator[TensorSpec]:
    n_q, n_kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    f16, f32 = "F16", "F32"

    def weight(kind: MODEL_TENSOR, dims: tuple[int, ...]) -> TensorSpec:
        return TensorSpec(_name(kind, layer=layer), dims, f16, "normal")

    def norm(kind: MODEL_TENSOR, size: int) -> TensorSpec:
        return TensorSpec(_name(kind, layer=layer), (size,), f32, "ones")

    yield norm(MODEL_TENSOR.ATTN_NORM, shape.n_embd)
    yield weight(MODEL_TENSOR.ATTN_Q, (n_q, shape.n_embd))
    yield weight(MODEL_TENSOR.ATTN_K, (n_kv, shape.n_embd))
    yield weight(MODEL_TENSOR.ATTN_V, (n_kv, shape.n_embd))
    if shape.qkv_bias:  # biases are F32, as the converter keeps every tensor not named *.weight
        for kind, size in ((MODEL_TENSOR.ATTN_Q, n_q), (MODEL_TENSOR.ATTN_K, n_kv), (MODEL_TENSOR.ATTN_V, n_kv)):
            yield TensorSpec(_name(kind, "bias", layer), (size,), f32, "normal")
    if shape.qk_norm:
        yield norm(MODEL_TENSOR.ATTN_Q_NORM, shape.head_dim)
        yield norm(MODEL_TENSOR.ATTN_K_NORM, shape.head_dim)
    yield weight(MODEL_TENSOR.ATTN_OUT, (shape.n_embd, n_q))
    if shape.arch == "gemma3":
        yield norm(MODEL_TENSOR.ATTN_POST_NORM, shape.n_embd)
    yield norm(MODEL_TENSOR.FFN_NORM, shape.n_embd)
    if shape.n_expert:
        # The router stays F32 (the converter forces FFN_GATE_INP to F32; llama.cpp never quantizes it).
        yield TensorSpec(_name(MODEL_TENSOR.FFN_GATE_INP, layer=layer), (shape.n_expert, shape.n_embd), f32, "normal")
        yield weight(MODEL_TENSOR.FFN_GATE_EXP, (shape.n_expert, shape.n_ff_expert, shape.n_embd))
        yield weight(MODEL_TENSOR.FFN_UP_EXP, (shape.n_expert, shape.n_ff_expert, shape.n_embd))
        yield weight(MODEL_TENSOR.FFN_DOWN_EXP, (shape.n_expert, shape.n_embd, shape.n_ff_expert))
    else:
        yield weight(MODEL_TENSOR.FFN_GATE, (shape.n_ff, shape.n_embd))
        yield weight(MODEL_TENSOR.FFN_UP, (shape.n_ff, shape.n_embd))
        yield weight(MODEL_TENSOR.FFN_DOWN, (shape.n_embd, shape.n_ff))
    if shape.arch == "gemma3":
        yield norm(MODEL_TENSOR.FFN_POST_NORM, shape.n_embd)


def tensor_plan(shape: TransformerShape) -> list[TensorSpec]:
    """Every tensor of the model in file order, as convert_hf_to_gguf.py names and types them."""
    tensors = [TensorSpec(_name(MODEL_TENSOR.TOKEN_EMBD), (shape.n_vocab, shape.n_embd), "F16", "normal")]
    if shape.rope_scaling is not None and shape.rope_scaling.kind == "llama3":
        tensors.append(TensorSpec(_name(MODEL_TENSOR.ROPE_FREQS), (shape.head_dim // 2,), "F32", "rope_freqs"))
    for layer in range(shape.n_layers):
        tensors.extend(_layer_tensors(shape, layer))
    tensors.append(TensorSpec(_name(MODEL_TENSOR.OUTPUT_NORM), (shape.n_embd,), "F32", "ones"))
    if not shape.tied_embeddings:
        tensors.append(TensorSpec(_name(MODEL_TENSOR.OUTPUT), (shape.n_vocab, shape.n_embd), "F16", "normal"))
    return tensors


def parameter_count(shape: TransformerShape) -> int:
    return sum(t.n_elements for t in tensor_plan(shape) if t.fill != "rope_freqs")


def proxy_plan(shape: TransformerShape, rows: int) -> list[TensorSpec]:
    """The model with every weight matrix cut to `rows` rows (and expert stacks to 2 experts).

    llama.cpp's quantizer picks each tensor's type from its name, its row length (ne[0]), whether it has
    several experts (ne[2] > 1) and the model's hyperparameters, never from its row count; so quantizing this
    small proxy gives the full model's types, and rows of genuinely quantized random values to build it from.
    """

    def cut(spec: TensorSpec) -> TensorSpec:
        if len(spec.shape) == 1:
            return spec
        leading = (min(spec.shape[0], 2),) if len(spec.shape) == 3 else ()
        return replace(spec, shape=(*leading, min(spec.shape[-2], rows), spec.shape[-1]))

    return [cut(spec) for spec in tensor_plan(shape)]


def with_types(plan: list[TensorSpec], types: Mapping[str, str]) -> list[TensorSpec]:
    """The plan with each tensor's type as llama.cpp's quantizer chose it (by tensor name)."""
    missing = [spec.name for spec in plan if spec.name not in types]
    if missing:
        raise ValueError(f"the quantized proxy lacks tensors {missing[:3]}")
    return [replace(spec, type_name=types[spec.name], native_type=spec.type_name) for spec in plan]


def llama3_rope_factors(shape: TransformerShape) -> np.ndarray:
    """The rope_freqs tensor convert_hf_to_gguf.py computes for rope_type llama3 (Llama 3.1 and later)."""
    scaling = shape.rope_scaling
    assert scaling is not None and scaling.original_context is not None
    low, high = scaling.low_freq_factor or 1.0, scaling.high_freq_factor or 4.0
    freqs = 1.0 / shape.rope_theta ** (np.arange(0, shape.head_dim, 2, dtype=np.float64) / shape.head_dim)
    wavelen = 2 * math.pi / freqs
    smooth = (scaling.original_context / wavelen - low) / (high - low)
    factors = np.where(
        wavelen < scaling.original_context / high,
        1.0,
        np.where(
            wavelen > scaling.original_context / low, scaling.factor, 1.0 / ((1.0 - smooth) / scaling.factor + smooth)
        ),
    )
    return factors.astype(np.float32)


# ------------------------------------------------------------------------------------------- metadata


def _add_architecture_keys(writer: GGUFWriter, shape: TransformerShape, file_type: int) -> None:
    writer.add_type("model")
    writer.add_name(shape.name)
    writer.add_context_length(shape.n_ctx_train)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_layer_norm_rms_eps(shape.rms_norm_eps)
    writer.add_file_type(file_type)
    if file_type != LlamaFileType.MOSTLY_F16:
        writer.add_quantization_version(GGML_QUANT_VERSION)  # as llama.cpp's quantizer writes
    # The converter writes head sizes when config.json has head_dim (Gemma 3 and Qwen 3 always do); they are
    # needed whenever the head size is not n_embd / n_heads.
    if shape.arch in ("gemma3", "qwen3", "qwen3moe") or shape.head_dim != shape.n_embd // shape.n_heads:
        writer.add_key_length(shape.head_dim)
        writer.add_value_length(shape.head_dim)
    if shape.arch == "llama":
        writer.add_vocab_size(shape.n_vocab)
        writer.add_rope_dimension_count(shape.head_dim)
    if shape.sliding_window:
        writer.add_sliding_window(shape.sliding_window)
    if shape.n_expert:
        writer.add_expert_count(shape.n_expert)
        writer.add_expert_used_count(shape.n_expert_used)
        writer.add_expert_feed_forward_length(shape.n_ff_expert)
    scaling = shape.rope_scaling
    if scaling is not None and scaling.kind in ("linear", "yarn"):
        writer.add_rope_scaling_type(RopeScalingType.LINEAR if scaling.kind == "linear" else RopeScalingType.YARN)
        writer.add_rope_scaling_factor(scaling.factor)
        if scaling.original_context:
            writer.add_rope_scaling_orig_ctx_len(scaling.original_context)


def _add_tokenizer(writer: GGUFWriter, shape: TransformerShape) -> None:
    if shape.tokenizer.model == "gpt2":
        _add_bpe_tokenizer(writer, shape.n_vocab, shape.tokenizer)
    else:
        _add_spm_tokenizer(writer, shape.n_vocab)


def _add_spm_tokenizer(writer: GGUFWriter, n_vocab: int) -> None:
    """SentencePiece-style: <unk>, <s>, </s>, the byte tokens <0x00>..<0xFF>, fillers up to n_vocab."""
    specials = ["<unk>", "<s>", "</s>"]
    fillers = [f"t{i}" for i in range(len(specials) + 256, n_vocab)]
    tokens = (specials + [f"<0x{b:02X}>" for b in range(256)] + fillers)[:n_vocab]
    types = [TokenType.UNKNOWN] + [TokenType.CONTROL] * 2 + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(fillers)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * (n_vocab - len(fillers)) + [-float(i) for i in range(len(fillers))])
    writer.add_token_types(types[:n_vocab])
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def _byte_level_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 one-character tokens every byte-level BPE vocabulary starts with."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def _merge_pairs(alphabet: list[str]) -> Iterator[tuple[str, str]]:
    """Distinct (left, right) pairs whose concatenations are distinct: two letters, then pair + letter."""
    for left in alphabet:
        for right in alphabet:
            yield left, right
    for first in alphabet:
        for second in alphabet:
            for right in alphabet:
                yield first + second, right


def _add_bpe_tokenizer(writer: GGUFWriter, n_vocab: int, spec: TokenizerSpec) -> None:
    """Byte-level BPE: the 256 byte tokens, merged tokens, three control tokens; `spec.merges` merge rules."""
    alphabet = _byte_level_alphabet()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    n_merged = max(0, n_vocab - len(alphabet) - len(specials))
    pairs = list(itertools.islice(_merge_pairs(alphabet), max(n_merged, spec.merges)))
    tokens = (alphabet + [left + right for left, right in pairs[:n_merged]] + specials)[:n_vocab]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(spec.pre)
    writer.add_token_list(tokens)
    writer.add_token_types([TokenType.NORMAL] * (len(tokens) - len(specials)) + [TokenType.CONTROL] * len(specials))
    writer.add_token_merges([f"{left} {right}" for left, right in pairs[: spec.merges]])
    writer.add_bos_token_id(n_vocab - 3)
    writer.add_eos_token_id(n_vocab - 2)
    writer.add_add_bos_token(spec.add_bos)


# ------------------------------------------------------------------------------------------- writing

# The quantized rows of a tensor, by name: uint8 [n_rows, row_bytes], rows the quantizer made from the proxy.
RowSource = Callable[[str], np.ndarray]


def estimated_file_bytes(shape: TransformerShape, plan: list[TensorSpec]) -> int:
    """The size of the file write_gguf() writes for `plan`: exact tensor data, plus a bound on the header."""
    tensors = sum(GGUFWriter.ggml_pad(t.n_bytes, GGUF_DEFAULT_ALIGNMENT) for t in plan)
    # A vocabulary entry takes < 32 bytes (string, score, type), a merge rule < 24 (string).
    return tensors + shape.n_vocab * 32 + shape.tokenizer.merges * 24 + 2**20


def write_gguf(
    shape: TransformerShape,
    path: Path,
    plan: list[TensorSpec],
    *,
    seed: int,
    file_type: int = LlamaFileType.MOSTLY_F16,
    rows: RowSource | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> None:
    """Write the model at `path`, streaming: memory stays at the weight pool plus one chunk (and one tensor's
    quantized rows). Quantized tensors (plan entries the quantizer typed) are filled from `rows`."""
    writer = GGUFWriter(path, shape.arch)
    _add_architecture_keys(writer, shape, file_type)
    _add_tokenizer(writer, shape)
    for spec in plan:
        writer.add_tensor_info(
            spec.name, spec.shape, np.dtype(np.float32), spec.n_bytes, raw_dtype=GGMLQuantizationType[spec.type_name]
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    rng = np.random.default_rng(seed)
    pool = (rng.standard_normal(POOL_VALUES, dtype=np.float32) * WEIGHT_STD).astype(np.float16)
    with path.open("ab") as out:
        for spec in plan:
            _pad(out)  # tensor data starts aligned, as GGUFWriter.write_tensor_data does
            chunks = _row_chunks(spec, rows, rng) if spec.quantized else _value_chunks(spec, shape, pool, rng)
            for chunk in chunks:
                out.write(chunk)
                if on_bytes is not None:
                    on_bytes(chunk.nbytes)
        _pad(out)


def _pad(out: IO[bytes]) -> None:
    position = out.tell()
    out.write(b"\0" * (GGUFWriter.ggml_pad(position, GGUF_DEFAULT_ALIGNMENT) - position))


def _value_chunks(
    spec: TensorSpec, shape: TransformerShape, pool: np.ndarray, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    dtype = np.float16 if spec.type_name == "F16" else np.float32
    if spec.fill == "ones":
        yield np.ones(spec.n_elements, dtype=dtype)
    elif spec.fill == "rope_freqs":
        yield llama3_rope_factors(shape)
    else:
        remaining = spec.n_elements
        while remaining:
            take = min(remaining, CHUNK_VALUES)
            start = int(rng.integers(0, POOL_VALUES - take + 1))
            yield pool[start : start + take].astype(dtype, copy=False)
            remaining -= take


def _row_chunks(spec: TensorSpec, rows: RowSource | None, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The tensor as rows drawn at random from the quantizer's rows of the proxy (same type, same width)."""
    if rows is None:
        raise ValueError(f"{spec.name} is {spec.type_name}: write_gguf needs the quantized proxy's rows")
    source = rows(spec.name)
    if source.shape[1] != spec.row_bytes:
        raise ValueError(f"{spec.name}: proxy rows have {source.shape[1]} bytes, expected {spec.row_bytes}")
    remaining = spec.n_bytes // spec.row_bytes
    per_chunk = max(1, 2 * CHUNK_VALUES // spec.row_bytes)
    tensor_factor = float(np.exp2(rng.standard_normal() * TENSOR_SCALE_SPREAD_LOG2))
    while remaining:
        take = min(remaining, per_chunk)
        drawn = source[rng.integers(0, len(source), size=take)]  # a copy: fancy indexing
        yield spread_block_scales(drawn, spec.type_name, tensor_factor, rng)
        remaining -= take


def spread_block_scales(rows: np.ndarray, type_name: str, tensor_factor: float, rng: np.random.Generator) -> np.ndarray:
    """`rows` (uint8, whole blocks) with each block's FP16 scales multiplied by tensor_factor times a log-normal
    per-block factor (BLOCK_SCALE_SPREAD_LOG2), in place: the blocks' values keep their shape, their scales get
    the spread real weights have (see BLOCK_SCALE_SPREAD_LOG2 for why speed depends on it)."""
    fields = BLOCK_SCALE_FIELDS.get(type_name)
    if not fields:
        return rows
    block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]][1]
    blocks = rows.reshape(-1, block_bytes)
    factor = tensor_factor * np.exp2(rng.standard_normal(len(blocks)) * BLOCK_SCALE_SPREAD_LOG2)
    for offset in fields:
        field = np.ascontiguousarray(blocks[:, offset : offset + 2]).view(np.float16)[:, 0]
        scaled = np.clip(field.astype(np.float32) * factor, -65504, 65504).astype(np.float16)
        blocks[:, offset : offset + 2] = scaled.view(np.uint8).reshape(-1, 2)
    return rows

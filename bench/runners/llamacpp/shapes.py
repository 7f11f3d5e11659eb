"""llama.cpp model shapes: what a model's memory depends on, from its GGUF header or, without the file, from a
built-in table of known models (DeepSeek-R1-Distill-*) or the suite's `models[].metadata`.

Shapes from a file carry exact bytes per tensor; others get weights from parameters × the quantization type's
bits per weight.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError
from bench.runners.llamacpp.quant_types import BITS_PER_WEIGHT, body_bits, head_bits

if TYPE_CHECKING:
    from bench.suite import ModelSpec

# Tensor types llama.cpp's CPU backend repacks into its own layout at load (knobs.repack): the copy comes on
# top of the file pages read to make it (x86 AVX2 with this llama.cpp; ARM repacks a similar set).
REPACKED_TYPES = frozenset({"Q4_0", "Q4_K", "IQ4_NL"})
# Architectures whose sliding-window layers follow a fixed period when the GGUF gives no pattern
# (llama.cpp's set_swa_pattern: every n-th layer is a full-attention layer).
SWA_PERIOD_BY_ARCH = {"gemma2": 2, "gemma3": 6, "cohere2": 4}


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
    n_expert: int = 0  # a mixture of experts: experts per layer ...
    n_expert_used: int = 0  # ... and how many of them each token goes through
    expert_params: int = 0  # elements of the expert tensors (ffn_*_exps), all layers, all experts

    @property
    def n_params(self) -> int:
        return sum(self.layer_params) + self.input_params + self.output_params

    @property
    def n_active_params(self) -> int:
        """Parameters one token goes through: all of them, but of a mixture of experts' expert tensors only
        the used experts' share (n_expert_used / n_expert)."""
        if not self.n_expert or not self.expert_params:
            return self.n_params
        unused = self.expert_params * (self.n_expert - self.n_expert_used) // self.n_expert
        return self.n_params - unused


@dataclass(frozen=True)
class Weights:
    """Tensor bytes by where llama.cpp may put them."""

    layers: tuple[int, ...]
    input: int  # always in RAM
    output: int  # follows the output layer
    output_copy: int  # a tied head: the embeddings again, only when the output layer is on the GPU


def weights_for(shape: ModelShape, quantization: str | None) -> Weights:
    """Tensor bytes of the model at `quantization`: exact for the file's own type, else params × bits per
    weight, the output head at its own type's rate (head_bits) and the rest at the body's (body_bits)."""
    same = quantization in (None, "", "source") or quantization == shape.file_type
    if (
        same
        and shape.layer_bytes is not None
        and shape.input_bytes is not None
        and shape.output_bytes is not None
        and shape.embedding_bytes is not None
    ):
        return Weights(
            shape.layer_bytes,
            shape.input_bytes,
            shape.output_bytes,
            shape.embedding_bytes if shape.tied_embeddings else 0,
        )
    quant = shape.file_type if same else str(quantization)
    if quant not in BITS_PER_WEIGHT:
        raise BenchError(f"no bits-per-weight figure for quantization {quant!r}; known: {', '.join(BITS_PER_WEIGHT)}")
    body, head = body_bits(quant), head_bits(quant)

    def size(params: int, bits: float = body) -> int:
        return int(params * bits / 8)

    if shape.tied_embeddings:  # token_embd is the head: stored at the head's type, counted with the inputs
        other_inputs = shape.input_params - shape.embedding_params
        return Weights(
            tuple(size(p) for p in shape.layer_params),
            size(other_inputs) + size(shape.embedding_params, head),
            size(shape.output_params),
            size(shape.embedding_params, head),
        )
    return Weights(
        tuple(size(p) for p in shape.layer_params),
        size(shape.input_params),
        size(shape.output_params, head),
        0,
    )


def is_expert_tensor(name: str) -> bool:
    """A mixture of experts' stacked expert weights (blk.N.ffn_gate_exps / ffn_up_exps / ffn_down_exps ...);
    the router (ffn_gate_inp) and any shared expert (ffn_*_shexp) serve every token."""
    return "_exps." in name


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
    expert_params = 0
    for tensor in header.tensors:
        match = layer_name.match(tensor.name)
        if match and int(match.group(1)) < n_layers:
            layer = int(match.group(1))
            layer_params[layer] += tensor.n_elements
            expert_params += tensor.n_elements if is_expert_tensor(tensor.name) else 0
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
        name=path.name,
        basis=f"GGUF header of {path.name}",
        arch=arch,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=_per_layer(arch_value("attention.head_count_kv"), n_layers, n_heads),
        head_dim_k=head_dim_k,
        head_dim_v=head_dim_v,
        n_embd=n_embd,
        n_ff=n_ff,
        n_vocab=n_vocab,
        n_ctx_train=int(arch_value("context_length") or 0) or None,
        layer_params=tuple(layer_params),
        input_params=input_params,
        output_params=output_params,
        embedding_params=embedding_params,
        tied_embeddings=tied,
        sliding_window=window,
        swa_layers=_swa_layers(arch, arch_value("attention.sliding_window_pattern"), window, n_layers),
        file_type=file_type_name(header.get("general.file_type")),
        layer_bytes=tuple(layer_bytes),
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        embedding_bytes=embedding_bytes,
        repack_bytes=tuple(repack_bytes),
        header_bytes=header.data_offset,
        n_expert=int(arch_value("expert_count") or 0),
        n_expert_used=int(arch_value("expert_used_count") or 0),
        expert_params=expert_params,
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
    KnownModel(
        "DeepSeek-R1-Distill-Qwen-1.5B",
        r"r1.?distill.?qwen.?1[._]5b",
        "qwen2",
        1_777_088_000,
        28,
        12,
        2,
        128,
        1536,
        8960,
        151936,
        131072,
    ),
    KnownModel(
        "DeepSeek-R1-Distill-Qwen-7B",
        r"r1.?distill.?qwen.?7b",
        "qwen2",
        7_615_616_512,
        28,
        28,
        4,
        128,
        3584,
        18944,
        152064,
        131072,
    ),
    KnownModel(
        "DeepSeek-R1-Distill-Qwen-14B",
        r"r1.?distill.?qwen.?14b",
        "qwen2",
        14_770_033_664,
        48,
        40,
        8,
        128,
        5120,
        13824,
        152064,
        131072,
    ),
    KnownModel(
        "DeepSeek-R1-Distill-Qwen-32B",
        r"r1.?distill.?qwen.?32b",
        "qwen2",
        32_763_876_352,
        64,
        40,
        8,
        128,
        5120,
        27648,
        152064,
        131072,
    ),
    KnownModel(
        "DeepSeek-R1-Distill-Llama-8B",
        r"r1.?distill.?llama.?8b",
        "llama",
        8_030_261_248,
        32,
        32,
        8,
        128,
        4096,
        14336,
        128256,
        131072,
    ),
    KnownModel(
        "DeepSeek-R1-Distill-Llama-70B",
        r"r1.?distill.?llama.?70b",
        "llama",
        70_553_706_496,
        80,
        64,
        8,
        128,
        8192,
        28672,
        128256,
        131072,
    ),
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
    texts = [
        model.id,
        model.source or "",
        *model.files.values(),
        *(str(model.metadata.get(k, "")) for k in ("name", "hf_repo", "family")),
    ]
    haystack = " ".join(texts).lower()
    return next((k for k in KNOWN_MODELS if re.search(k.pattern, haystack)), None)


def shape_from_suite(model: ModelSpec) -> ModelShape | None:
    """A shape without the file: the known-models table, with `models[].metadata` taking precedence.

    Metadata keys: params_b (billions), n_layers, n_heads, n_kv_heads, head_dim, n_embd, n_ff, n_vocab,
    n_ctx_train. Without a known model, params_b, n_layers, n_kv_heads and head_dim are required.
    """
    known = known_model(model)
    meta = {
        k: _metadata_number(model.metadata, k)
        for k in (
            "params_b",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "n_embd",
            "n_ff",
            "n_vocab",
            "n_ctx_train",
        )
    }
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
        name=known.name if known else model.id,
        basis=basis,
        arch=known.arch if known else "",
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=(n_kv_heads,) * n_layers,
        head_dim_k=head_dim,
        head_dim_v=head_dim,
        n_embd=n_embd,
        n_ff=pick("n_ff", known.n_ff if known else 4 * n_embd),
        n_vocab=n_vocab,
        n_ctx_train=pick("n_ctx_train", known.n_ctx_train if known else 0) or None,
        layer_params=(per_layer,) * n_layers,
        input_params=embeddings,
        output_params=output,
        embedding_params=embeddings,
        tied_embeddings=tied,
    )

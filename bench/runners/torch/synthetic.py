"""Synthetic weights for the torch backend: a known shape built with transformers' `from_config`, random values.

`synthetic_folder(shape)` writes a folder holding the shape's Hugging Face config.json and a `synthetic.json`
(its seed) and no weights; the runner sees the marker and builds the model with `from_config` at the cell's
dtype, seeded, instead of loading weights: nothing is downloaded, nothing large is written. The config is the
converter's view of the shape (bench.models.catalog.TransformerShape) turned back into the keys transformers'
config class of that architecture reads, so llama.cpp's and torch's synthetic models have the same shape.

This module imports torch only inside functions (bench.plan reads the spec without torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models import ResolvedModel, cache_dir
from bench.models.catalog import GEMMA3_SWA_PERIOD, TransformerShape, safe_name

MARKER = "synthetic.json"
# llama.cpp architecture -> transformers' model_type (the config class AutoConfig.for_model picks).
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen3moe": "qwen3_moe", "gemma3": "gemma3_text"}


@dataclass(frozen=True)
class SyntheticNote:
    name: str
    seed: int


def hf_config(shape: TransformerShape) -> dict[str, Any]:
    """The config.json keys transformers needs to build the shape (config.json names, catalog values)."""
    config: dict[str, Any] = {
        "model_type": MODEL_TYPES[shape.arch],
        "hidden_size": shape.n_embd,
        "intermediate_size": shape.n_ff,
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_heads,
        "num_key_value_heads": shape.n_kv_heads,
        "head_dim": shape.head_dim,
        "vocab_size": shape.n_vocab,
        "max_position_embeddings": shape.n_ctx_train,
        "rope_theta": shape.rope_theta,
        "rms_norm_eps": shape.rms_norm_eps,
        "tie_word_embeddings": shape.tied_embeddings,
        "rope_scaling": _rope_scaling(shape),
    }
    if shape.arch == "llama":
        config["attention_bias"] = shape.qkv_bias
    if shape.arch == "gemma3":
        config["sliding_window"] = shape.sliding_window
        config["layer_types"] = [
            "full_attention" if (i + 1) % GEMMA3_SWA_PERIOD == 0 else "sliding_attention" for i in range(shape.n_layers)
        ]
    if shape.n_expert:
        config.update(
            num_experts=shape.n_expert,
            num_experts_per_tok=shape.n_expert_used,
            moe_intermediate_size=shape.n_ff_expert,
            decoder_sparse_step=1,
            mlp_only_layers=[],
            norm_topk_prob=True,
        )
    return config


def _rope_scaling(shape: TransformerShape) -> dict[str, Any] | None:
    scaling = shape.rope_scaling
    if scaling is None:
        return None
    out: dict[str, Any] = {"rope_type": scaling.kind, "factor": scaling.factor}
    if scaling.original_context is not None:
        out["original_max_position_embeddings"] = scaling.original_context
    if scaling.low_freq_factor is not None:
        out.update(low_freq_factor=scaling.low_freq_factor, high_freq_factor=scaling.high_freq_factor)
    return out


def synthetic_folder(
    shape: TransformerShape, quantization: str, say: Callable[[str], None] | None = None
) -> ResolvedModel:
    """BackendSpec.synthesize: the folder the runner builds the random model from (the same for every dtype:
    the cell's quantization picks the dtype when it loads)."""
    folder = cache_dir() / "synthetic-torch" / f"{safe_name(shape.name)}-{shape.key()}"
    folder.mkdir(parents=True, exist_ok=True)
    config = {**hf_config(shape), "architectures": [], "_name_or_path": shape.name}
    _write_if_changed(folder / "config.json", config)
    _write_if_changed(folder / MARKER, {"name": shape.name, "seed": int(shape.key(), 16) % 2**32})
    if say is not None:
        say(f"synthetic {shape.name}: random {quantization} weights are built when the model loads (from_config)")
    return ResolvedModel(
        reference=f"synthetic:{shape.name}", path=folder, weights="synthetic", weights_shape=shape.name
    )


def read_synthetic_note(folder: Path) -> SyntheticNote | None:
    """The marker of a synthetic folder, or None for a real model."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    data = json.loads(marker.read_text(encoding="utf-8"))
    return SyntheticNote(str(data["name"]), int(data["seed"]))


def build_random_model(config: Any, dtype: Any, seed: int) -> Any:
    """transformers' from_config: the architecture's own initialization, seeded, at `dtype`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def _write_if_changed(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)  # whole, even with another run writing the same folder

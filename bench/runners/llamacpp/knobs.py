"""llama.cpp's knobs (registered into bench.suite.knobs by the backend registry, for this backend only)."""

from __future__ import annotations

from typing import Any

from bench.suite.knobs import Knob

ALL_LAYERS = -1  # n_gpu_layers: every layer on the GPU ("all" in a suite)
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


def _gpu_layers(value: Any) -> Any:
    return ALL_LAYERS if value == "all" else value


def _on_off(value: Any) -> Any:
    # YAML 1.1 reads unquoted on/off as booleans: take them back as the words the suite meant.
    if value is True:
        return "on"
    if value is False:
        return "off"
    return value


def _show_gpu_layers(value: Any) -> str:
    return "all" if value is not None and int(value) < 0 else str(value)


KNOBS: tuple[Knob, ...] = (
    Knob(
        "n_gpu_layers",
        int,
        ALL_LAYERS,
        "layers offloaded to the GPU; all (-1) or a count",
        "GPU layers",
        "ngl",
        minimum=0,
        reload=True,
        memory=True,
        logits=True,
        per_device=True,
        cpu_value=0,
        extra_words=("all",),
        parse=_gpu_layers,
        show=_show_gpu_layers,
    ),
    Knob(
        "n_batch",
        int,
        2048,
        "logical batch: tokens per llama_decode call",
        "batch",
        "b",
        minimum=1,
        memory=True,
    ),
    Knob(
        "n_ubatch",
        int,
        512,
        "physical batch: tokens per compute graph",
        "ubatch",
        "ub",
        minimum=1,
        memory=True,
    ),
    Knob(
        "flash_attn",
        str,
        "auto",
        "flash attention: auto | on | off",
        "flash attn",
        "fa",
        allowed=("auto", "on", "off"),
        memory=True,
        logits=True,
        parse=_on_off,
    ),
    Knob(
        "kv_cache_type",
        str,
        "f16",
        "KV cache element type (K and V)",
        "KV cache",
        "kv",
        allowed=KV_CACHE_TYPES,
        memory=True,
        logits=True,
    ),
    Knob(
        "swa_full",
        bool,
        False,
        "sliding-window layers (Gemma 2/3, Cohere2) keep a full-context KV cache; false keeps a window-sized "
        "one, as llama-bench and llama-server do (llama.cpp's own context default is true)",
        "full SWA cache",
        "swafull",
        memory=True,
    ),
    Knob("mmap", bool, True, "map the model file instead of reading it", "mmap", "mmap", reload=True),
    Knob(
        "repack",
        bool,
        True,
        "llama.cpp CPU weight repacking (extra buffer types, AMX included); false avoids the AMX SIGILL some VMs give",
        "repack",
        "repack",
        reload=True,
    ),
)

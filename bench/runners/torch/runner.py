"""PyTorch/transformers backend: the llama.cpp runner's cells and metrics, on CPU or CUDA.

Models: a Hugging Face model folder (config.json + safetensors; never pickled weights) or a GGUF
file, which transformers dequantizes once into a safetensors folder in bench's cache (its GGUF
parser is slow, and a PyTorch deployment would convert once too). Quantizations: fp32, bf16, fp16
as the weights' dtype; int8 and int4 weight-only through torchao's quantize_.

Timing mirrors llama-bench: the prompt is one forward pass after the depth-filled KV cache,
each generated token one forward pass reusing the cache; only logits for the last position are
computed. On CUDA the clock is a pair of CUDA events around the forward pass (the stream is idle
before, so launch gaps count); on CPU it is perf_counter around the (synchronous) forward pass.

This module imports torch only inside functions: bench.plan imports it to ask which
quantizations a device supports, which runs in a subprocess (bench.runners.torch.probe).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError, first_line
from bench.hardware import resolve_threads
from bench.runners.base import LoadInfo, SpeedEngine, context_size, release_freed_heap
from bench.runners.torch.convert import checkpoint_from_gguf, read_source_note
from bench.runners.torch.dtypes import (
    INT4_GROUP_SIZES,
    WEIGHT_ONLY,
    compute_dtype_name,
    device_name,
    weight_only_config,
)
from bench.runners.torch.synthetic import build_random_model, read_synthetic_note
from bench.suite import Cell

DEPTH_CHUNK = 2048  # depth fill in chunks: bounds the attention scratch memory (untimed anyway)
_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}

# ------------------------------------------------------------------------ runner


def _storage_bytes(tensor: Any) -> int:
    """Bytes a (possibly torchao-quantized) tensor holds: a wrapper subclass counts its inner tensors."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(_storage_bytes(getattr(tensor, name)) for name in names)
    return int(tensor.numel()) * int(tensor.element_size())


def _release_freed_memory() -> None:
    """Hand memory freed while loading (float weights replaced by quantized ones) back to the OS, so that
    the cells' peak RSS counts what the model holds, not what glibc kept around."""
    import gc

    gc.collect()
    release_freed_heap()


def _int4_group_size(model: Any) -> int:
    import torch

    widths = {module.in_features for module in model.modules() if isinstance(module, torch.nn.Linear)}
    for size in INT4_GROUP_SIZES:
        if all(width % size == 0 for width in widths):
            return size
    raise BenchError(
        f"int4 weight-only needs every linear layer's input width divisible by 32; "
        f"this model has widths {sorted(widths)}"
    )


class TorchRunner(SpeedEngine):
    backend = "torch"

    def __init__(self, model_path: Path, load_cell: Cell) -> None:
        self.model_path = model_path
        self.load_cell = load_cell
        self.device_kind = load_cell.device_kind
        self.device = device_name(load_cell.device_kind, load_cell.device_index)
        self.model: Any = None
        self.tokenizer: Any = None
        self.cache: Any = None
        self.n_ctx = 0
        self._pos = 0
        self._kv_peak_bytes: int | None = None
        self._cache_kw = "past_key_values"
        self._bos: int | None = None
        self._eog: set[int] = set()

    # ------------------------------------------------------------ load
    def _set_threads(self, threads: int | None) -> None:
        import torch

        torch.set_num_threads(resolve_threads(threads))

    def load(self) -> LoadInfo:
        import torch
        from transformers import AutoConfig, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

        quant = self.load_cell.quantization
        if self.device_kind == "cuda":
            torch.cuda.set_device(self.device)
        self._set_threads(self.load_cell.threads)
        extra: dict[str, Any] = {}
        folder = self.model_path
        synthetic = read_synthetic_note(folder) if folder.is_dir() else None
        if self.model_path.is_file():  # GGUF: dequantized once, off the clock (like llama.cpp's derivation)
            folder = checkpoint_from_gguf(self.model_path)
            extra["derived_from"] = read_source_note(folder)
        try:
            # Config and model class first, off the clock: they cost Python imports, not model loading.
            config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
            model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(
                f"transformers cannot load {folder} as a causal language model: {type(exc).__name__}: {first_line(exc)}"
            ) from None
        if self._compiled:
            import torch._dynamo  # off the clock: seconds of Python imports, not loading

            # Past the recompile limit dynamo would silently run eager: a measured figure must not be that.
            torch._dynamo.config.fail_on_recompile_limit_hit = True
        dtype_name = compute_dtype_name(quant, self.device_kind)
        options: dict[str, Any] = {}
        can_skip_mmap = "disable_mmap" in inspect.signature(model_class.from_pretrained).parameters
        if quant in WEIGHT_ONLY and can_skip_mmap:
            # Read, not mapped: a mapped file stays resident while any unquantized tensor (the embeddings)
            # still views it, and the row's peak RSS would count the dropped float weights.
            options["disable_mmap"] = True
        start = time.perf_counter()
        try:
            dtype = getattr(torch, dtype_name) if dtype_name else "auto"
            if synthetic is not None:  # random values of the shape (bench.runners.torch.synthetic)
                model = build_random_model(config, torch.float32 if dtype == "auto" else dtype, synthetic.seed)
            else:
                model = model_class.from_pretrained(folder, config=config, use_safetensors=True, dtype=dtype, **options)
        except (OSError, ValueError) as exc:
            raise BenchError(f"transformers cannot load {folder}: {first_line(exc)}") from None
        model = model.to(self.device).eval()
        n_params = sum(int(p.numel()) for p in model.parameters())
        file_type = _DTYPE_NAMES.get(str(model.dtype).removeprefix("torch."), str(model.dtype))
        if quant in WEIGHT_ONLY:
            file_type = self._quantize(model, quant)
        if self._compiled:
            # Compiled lazily at the first forward pass, which the suite's warm-up repetitions absorb;
            # quality (logits, generation) runs the eager forward, whose numbers are the same.
            model.forward = torch.compile(model.forward, mode=self.load_cell.torch_compile)
        self._synchronize()
        load_s = time.perf_counter() - start
        self.model = model
        # transformers 5.24 renamed past_key_values to cache (the old name goes in 5.40).
        forward_args = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in forward_args else "past_key_values"
        if synthetic is None:  # synthetic weights have no tokenizer: speed cells feed random token ids
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self._bos = self._find_bos()
            self._eog = self._find_eog()
        weight_bytes = sum(_storage_bytes(p) for p in model.parameters())
        extra.update(self._config_fields())
        # In-memory weight format and bits: what this row's memory and speed come from.
        extra["file_type"] = file_type
        extra["bits_per_weight"] = 8.0 * weight_bytes / n_params if n_params else None
        _release_freed_memory()
        if self.device_kind == "cuda":
            torch.cuda.empty_cache()  # the float weights' blocks, freed by quantization, leave the allocator
        return LoadInfo(load_s=load_s, n_params=n_params, model_file_bytes=self._file_bytes(), extra=extra)

    def _quantize(self, model: Any, quant: str) -> str:
        from torchao.quantization import quantize_

        group_size = _int4_group_size(model) if quant == "int4" else 128
        try:
            quantize_(model, weight_only_config(quant, self.device_kind, group_size))
        except Exception as exc:  # the planner's probe normally turns these into skipped rows
            raise BenchError(
                f"torchao cannot quantize this model to {quant} weight-only on {self.device}: "
                f"{type(exc).__name__}: {first_line(exc)}"
            ) from None
        return f"{quant} weight-only" + (f" g{group_size}" if quant == "int4" else "")

    def _config_fields(self) -> dict[str, Any]:
        config = self.model.config
        n_heads = getattr(config, "num_attention_heads", None)
        hidden = getattr(config, "hidden_size", None)
        return {
            "arch": getattr(config, "model_type", "") or "",
            "n_layers": getattr(config, "num_hidden_layers", None),
            "n_heads": n_heads,
            "n_kv_heads": getattr(config, "num_key_value_heads", None) or n_heads,
            "head_dim": getattr(config, "head_dim", None) or (hidden // n_heads if hidden and n_heads else None),
            "n_ctx_train": getattr(config, "max_position_embeddings", None),
        }

    def _file_bytes(self) -> int:
        if self.model_path.is_file():
            return self.model_path.stat().st_size
        return sum(p.stat().st_size for p in self.model_path.glob("*.safetensors"))

    def _find_bos(self) -> int | None:
        """The BOS token if the tokenizer starts sequences with one (as llama.cpp's add_bos says)."""
        with_special = self.tokenizer.encode("a", add_special_tokens=True)
        plain = self.tokenizer.encode("a", add_special_tokens=False)
        bos = self.tokenizer.bos_token_id
        if bos is not None and len(with_special) > len(plain) and with_special[0] == bos:
            return int(bos)
        return None

    def _find_eog(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id if self.model.generation_config else None
        found = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            found.add(self.tokenizer.eos_token_id)
        return {int(i) for i in found}

    def n_vocab(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def bos_token(self) -> int | None:
        return self._bos

    # ------------------------------------------------------------ context
    def start_context(self, cell: Cell) -> dict[str, Any]:
        import torch

        self._set_threads(cell.threads)
        self.n_ctx = context_size(cell)
        self._seq_len = context_size(cell, per_sequence=True)
        self._kv_peak_bytes = None
        if self.device_kind == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.cache = self._new_cache(cell.static_cache)
        return {"n_ctx": self.n_ctx, "threads_used": torch.get_num_threads()}

    def _new_cache(self, static: bool | None) -> Any:
        from transformers import DynamicCache, StaticCache

        if static:
            # A fixed-size cache: fixed shapes for torch.compile, no reallocation while decoding.
            return StaticCache(config=self.model.config, max_cache_len=self._seq_len)
        return DynamicCache(config=self.model.config)

    def _static(self) -> bool:
        from transformers import StaticCache

        return isinstance(self.cache, StaticCache)

    def close(self) -> None:
        self.model = self.cache = None
        if self.device_kind == "cuda":
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------ timed primitives
    def _synchronize(self) -> None:
        if self.device_kind == "cuda":
            import torch

            torch.cuda.synchronize(self.device)

    def _inputs(self, tokens: np.ndarray, start: int) -> tuple[Any, Any]:
        import torch

        rows = np.atleast_2d(np.asarray(tokens, dtype=np.int64))  # [sequences, n]: the batch dimension
        ids = torch.as_tensor(rows, device=self.device)
        positions = torch.arange(start, start + rows.shape[1], device=self.device).expand(rows.shape[0], -1)
        return ids, positions

    def _forward(self, ids: Any, positions: Any, cache: Any, logits_to_keep: int = 1, eager: bool = False) -> Any:
        """Logits of a forward pass; eager=True bypasses torch.compile (the class's own forward)."""
        import torch

        forward = type(self.model).forward.__get__(self.model) if eager else self.model
        with torch.inference_mode():
            cache_args = {self._cache_kw: cache} if cache is not None else {}
            return forward(
                input_ids=ids,
                position_ids=positions,
                use_cache=cache is not None,
                logits_to_keep=logits_to_keep,
                **cache_args,
            ).logits

    def _timed_step(self, tokens: np.ndarray) -> float:
        """One forward pass of `tokens` after the cache, in seconds until the device is done."""
        import torch

        ids, positions = self._inputs(tokens, self._pos)  # built off the clock; tokens: [sequences, n]
        if self.device_kind == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            begin.record()
            self._forward(ids, positions, self.cache)
            end.record()
            end.synchronize()
            elapsed = begin.elapsed_time(end) / 1000.0
        else:
            start = time.perf_counter()
            self._forward(ids, positions, self.cache)
            elapsed = time.perf_counter() - start
        self._pos += ids.shape[1]
        return elapsed

    def reset(self, depth_tokens: np.ndarray) -> None:
        if self._static():
            import torch

            with torch.inference_mode():  # its tensors were made in inference mode
                self.cache.reset()
        else:
            self.cache = self._new_cache(False)
        self._pos = 0
        for start in range(0, depth_tokens.shape[1], DEPTH_CHUNK):
            chunk = depth_tokens[:, start : start + DEPTH_CHUNK]
            self._forward(*self._inputs(chunk, self._pos), self.cache)
            self._pos += chunk.shape[1]
        self._synchronize()

    def truncate(self, n_keep: int) -> bool:
        self._note_kv_bytes()
        if self._static():
            return False  # a static cache cannot drop positions: measure_cell refills it with reset()
        if self._pos > n_keep:
            self.cache.crop(n_keep - self._pos)  # a negative count: drop that many newest positions
        self._pos = n_keep
        return True

    def prefill(self, tokens: np.ndarray) -> float:
        return self._timed_step(tokens)

    def decode(self, tokens: np.ndarray) -> list[float]:
        return [self._timed_step(step[:, None]) for step in tokens]  # each step: one token per sequence

    def _note_kv_bytes(self) -> None:
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            return
        held = sum(
            _storage_bytes(tensor)
            for layer in layers
            for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None))
            if tensor is not None
        )
        self._kv_peak_bytes = max(self._kv_peak_bytes or 0, held)

    @property
    def _compiled(self) -> bool:
        return self.load_cell.torch_compile not in (None, "off")

    def _graph_count(self) -> int:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"]) + int(counters["frames"]["total"])

    def on_measured_start(self) -> None:
        self._graphs_before = self._graph_count() if self._compiled else 0

    def on_measured_end(self) -> None:
        """A recompile inside the measured repetitions mixes compile time (or eager runs) into the figures."""
        if not self._compiled:
            return
        recompiles = self._graph_count() - self._graphs_before
        if recompiles:
            raise BenchError(
                f"torch.compile ({self.load_cell.torch_compile}) compiled again during the measured "
                f"repetitions ({recompiles} new graph(s)/frame(s)): the figures would mix compilation "
                "with runs; add warm-ups (workload.warmup) or use static_cache: true"
            )

    def memory_fields(self) -> dict[str, Any]:
        self._note_kv_bytes()
        fields: dict[str, Any] = {"kv_cache_bytes": self._kv_peak_bytes}
        if self.device_kind == "cuda":
            import torch

            fields["peak_vram_bytes"] = int(torch.cuda.max_memory_reserved(self.device))
        return fields

    # ------------------------------------------------------------ quality support
    def tokenize(self, text: str, add_bos: bool = True) -> np.ndarray:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if add_bos and self._bos is not None:
            ids = [self._bos, *ids]
        return np.asarray(ids, dtype=np.int32)

    def prepare_logits(self, n_ctx: int, cell: Cell) -> None:
        self._set_threads(cell.threads)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits for every position of `tokens` as one fresh sequence (no cache): float32 [len, n_vocab]."""
        import torch

        ids, positions = self._inputs(tokens, 0)
        with torch.inference_mode():
            out = self._forward(ids, positions, None, logits_to_keep=0, eager=True)
        return out[0].float().cpu().numpy()

    def detokenize(self, tokens: np.ndarray) -> str:
        return str(self.tokenizer.decode([int(t) for t in tokens], skip_special_tokens=True))

    def generate_greedy(self, tokens: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Greedy decoding on a KV cache; stops at an end-of-generation token."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        logits = self._forward(*self._inputs(tokens, 0), cache, eager=True)
        position = len(tokens)
        generated: list[int] = []
        while True:
            token = int(logits[0, -1].argmax())
            if token in self._eog:
                break
            generated.append(token)
            if len(generated) == max_new_tokens:
                break
            logits = self._forward(*self._inputs(np.asarray([token]), position), cache, eager=True)
            position += 1
        return np.asarray(generated, dtype=np.int32)

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
quantizations a device supports, which runs in a subprocess (`python -m bench.runners.torch probe`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.runners.base import LoadInfo, Runner
from bench.suite import Cell

FLOAT_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
WEIGHT_ONLY = ("int8", "int4")
# Activations of weight-only quantized models: bf16 where the GPU's kernels expect it; on CPUs bf16
# matmuls are emulated on most parts, so fp32. tinygemm's int4 kernel accepts only bf16.
WEIGHT_ONLY_COMPUTE = {("int8", "cpu"): "float32", ("int8", "cuda"): "bfloat16",
                       ("int4", "cpu"): "bfloat16", ("int4", "cuda"): "bfloat16"}
# torchao's int4 layouts: tinygemm's tile-packed one on CUDA; on CPU only the plain one (it needs mslk).
INT4_PACKING = {"cuda": "tile_packed_to_4d", "cpu": "plain"}
INT4_GROUP_SIZES = (128, 64, 32)
N_CTX_ROUND = 256  # as the llama.cpp runner rounds its context, so both report the same n_ctx
DEPTH_CHUNK = 2048  # depth fill in chunks: bounds the attention scratch memory (untimed anyway)
PROBE_TIMEOUT_S = 300.0
SOURCE_NOTE = "bench_source.txt"  # in a converted folder: which GGUF it came from, for the row's derived_from
_DTYPE_NAMES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


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


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


# ------------------------------------------------------------------------ capability check


def _probe_one(quantization: str, device_kind: str, device_index: int) -> str:
    """'' if a small linear layer runs at this quantization on the device and matches fp32, else why not."""
    import torch

    device = device_name(device_kind, device_index)
    dtype_name = compute_dtype_name(quantization, device_kind)
    if dtype_name is None or quantization == "fp32":
        return ""
    if device_kind == "cuda" and dtype_name == "bfloat16" and not torch.cuda.is_bf16_supported():
        gpu = torch.cuda.get_device_name(device_index)
        return f"{quantization} needs bfloat16, which {gpu} does not support"
    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 256, bias=False)
    inputs = torch.randn(8, 256)
    reference = layer(inputs).detach()
    dtype = getattr(torch, dtype_name)
    layer = layer.to(device=device, dtype=dtype)
    what = f"{quantization} ({dtype_name} matmul)"
    if quantization in WEIGHT_ONLY:
        try:
            from torchao import __version__ as torchao_version
            from torchao.quantization import quantize_
        except ImportError as exc:
            return f"{quantization} weight-only quantization needs torchao ({exc}): pip install -e '.[torch]'"
        config = weight_only_config(quantization, device_kind)
        what = f"{quantization} weight-only (torchao {torchao_version} {type(config).__name__}"
        what += f", {INT4_PACKING[device_kind]} layout)" if quantization == "int4" else ")"
        try:
            quantize_(layer, config)
        except Exception as exc:  # noqa: BLE001 - an unsupported kernel is the answer, not a crash
            hint = ("; torchao's int4 kernels are for CUDA GPUs: on CPU use int8, or llama.cpp's Q4 types"
                    if quantization == "int4" and device_kind == "cpu" else "")
            return f"{what} is not supported on {device}: {type(exc).__name__}: {_first_line(exc)}{hint}"
    try:
        with torch.inference_mode():
            output = layer(inputs.to(device=device, dtype=dtype)).float().cpu()
    except Exception as exc:  # noqa: BLE001
        return f"{what} does not run on {device}: {type(exc).__name__}: {_first_line(exc)}"
    error = float((output - reference).abs().max() / reference.abs().max())
    if not np.isfinite(error) or error > 0.2:  # int4 is the loosest: ~0.08 relative error on random weights
        return f"{what} on {device} gives wrong results (max relative error {error:.3g} against fp32)"
    return ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def probe_quantizations(device_kind: str, device_index: int, quantizations: list[str]) -> dict[str, str]:
    """Run inside the probe subprocess: quantization -> '' (supported) or the reason it is not."""
    try:
        import torch
        import transformers  # noqa: F401 - the runner needs it for every quantization
    except ImportError as exc:
        return {q: f"the torch backend needs torch and transformers ({exc}): pip install -e '.[torch]'"
                for q in quantizations}
    if device_kind == "cuda" and not torch.cuda.is_available():
        return {q: f"torch {torch.__version__} cannot use CUDA here" for q in quantizations}
    return {q: _probe_one(q, device_kind, device_index) for q in quantizations}


def quantization_skip_reasons(device_kind: str, device_index: int,
                              quantizations: list[str]) -> dict[str, str]:
    """Which torch quantizations this device cannot run, and why (empty reason: it can).

    Checked for real (a small layer at each quantization) in a subprocess, so the parent neither pays
    for importing torch nor holds a CUDA context while workers measure memory.
    """
    command = [sys.executable, "-m", "bench.runners.torch", "probe", device_kind, str(device_index),
               *quantizations]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        reason = f"the torch capability check did not finish in {PROBE_TIMEOUT_S:.0f} s"
        return dict.fromkeys(quantizations, reason)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        return dict.fromkeys(quantizations,
                             f"the torch capability check failed (exit {done.returncode}): {tail}")
    reasons: dict[str, str] = json.loads(lines[-1])
    return reasons


# ------------------------------------------------------------------------ GGUF -> safetensors


def checkpoint_from_gguf(gguf: Path) -> Path:
    """A safetensors model folder with the GGUF's weights dequantized to float32, made once and cached.

    Keyed by the file's path, size and mtime and the transformers version (its GGUF mapping decides
    the result). A file lock keeps two workers from converting the same file at once.
    """
    import transformers
    from filelock import FileLock

    from bench.models import cache_dir

    gguf = gguf.resolve()
    stat = gguf.stat()
    stamp = f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}:{transformers.__version__}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:16]
    target = cache_dir() / "torch-from-gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import shutil

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.models import gguf_metadata

    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # unsupported architecture, unknown tensor type, ...
        raise BenchError(f"transformers cannot load the GGUF file {gguf}: {type(exc).__name__}: "
                         f"{_first_line(exc)} (its GGUF support covers fewer architectures than llama.cpp)"
                         ) from None
    # The weights are now plain tensors: drop the GGUF 'quantizer', which refuses to save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    file_type = gguf_metadata(gguf).get("file_type") or "unknown type"
    note = (f"{gguf.name} ({file_type} GGUF, dequantized to float32 by "
            f"transformers {transformers.__version__})")
    (partial / SOURCE_NOTE).write_text(note + "\n", encoding="utf-8")
    os.replace(partial, target)


def _read_source_note(folder: Path) -> str:
    try:
        return (folder / SOURCE_NOTE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


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
    import ctypes
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc (e.g. musl): nothing to trim
            pass


def _int4_group_size(model: Any) -> int:
    import torch

    widths = {module.in_features for module in model.modules() if isinstance(module, torch.nn.Linear)}
    for size in INT4_GROUP_SIZES:
        if all(width % size == 0 for width in widths):
            return size
    raise BenchError(f"int4 weight-only needs every linear layer's input width divisible by 32; "
                     f"this model has widths {sorted(widths)}")


class TorchRunner(Runner):
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

        torch.set_num_threads(threads or _physical_cores())

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
        if self.model_path.is_file():  # GGUF: dequantized once, off the clock (like llama.cpp's derivation)
            folder = checkpoint_from_gguf(self.model_path)
            extra["derived_from"] = _read_source_note(folder)
        try:
            # Config and model class first, off the clock: they cost Python imports, not model loading.
            config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
            model_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"transformers cannot load {folder} as a causal language model: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
        if self.load_cell.torch_compile:
            import torch._dynamo  # noqa: F401 - off the clock: seconds of Python imports, not loading
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
            model = model_class.from_pretrained(folder, config=config, use_safetensors=True, dtype=dtype,
                                                **options)
        except (OSError, ValueError) as exc:
            raise BenchError(f"transformers cannot load {folder}: {_first_line(exc)}") from None
        model = model.to(self.device).eval()
        n_params = sum(int(p.numel()) for p in model.parameters())
        file_type = _DTYPE_NAMES.get(str(model.dtype).removeprefix("torch."), str(model.dtype))
        if quant in WEIGHT_ONLY:
            file_type = self._quantize(model, quant)
        if self.load_cell.torch_compile:
            # Compiled lazily at the first forward pass, which the suite's warm-up repetitions absorb;
            # quality (logits, generation) runs the eager forward, whose numbers are the same.
            model.forward = torch.compile(model.forward)
        self._synchronize()
        load_s = time.perf_counter() - start
        self.model = model
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        # transformers 5.24 renamed past_key_values to cache (the old name goes in 5.40).
        forward_args = inspect.signature(type(model).forward).parameters
        self._cache_kw = "cache" if "cache" in forward_args else "past_key_values"
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
            raise BenchError(f"torchao cannot quantize this model to {quant} weight-only on {self.device}: "
                             f"{type(exc).__name__}: {_first_line(exc)}") from None
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
            "head_dim": getattr(config, "head_dim", None)
            or (hidden // n_heads if hidden and n_heads else None),
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
        needed = cell.depth + cell.prompt_tokens + cell.gen_tokens + 1
        self.n_ctx = -(-needed // N_CTX_ROUND) * N_CTX_ROUND
        self._kv_peak_bytes = None
        if self.device_kind == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.cache = self._new_cache(cell.static_cache)
        return {"n_ctx": self.n_ctx}

    def _new_cache(self, static: bool | None) -> Any:
        from transformers import DynamicCache, StaticCache

        if static:
            # A fixed-size cache: fixed shapes for torch.compile, no reallocation while decoding.
            return StaticCache(config=self.model.config, max_cache_len=self.n_ctx)
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

        ids = torch.as_tensor(np.asarray(tokens, dtype=np.int64), device=self.device)[None]
        positions = torch.arange(start, start + len(tokens), device=self.device)[None]
        return ids, positions

    def _forward(self, ids: Any, positions: Any, cache: Any, logits_to_keep: int = 1,
                 eager: bool = False) -> Any:
        """Logits of a forward pass; eager=True bypasses torch.compile (the class's own forward)."""
        import torch

        forward = type(self.model).forward.__get__(self.model) if eager else self.model
        with torch.inference_mode():
            cache_args = {self._cache_kw: cache} if cache is not None else {}
            return forward(input_ids=ids, position_ids=positions, use_cache=cache is not None,
                           logits_to_keep=logits_to_keep, **cache_args).logits

    def _timed_step(self, tokens: np.ndarray) -> float:
        """One forward pass of `tokens` after the cache, in seconds until the device is done."""
        import torch

        ids, positions = self._inputs(tokens, self._pos)  # built off the clock
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
        self._pos += len(tokens)
        return elapsed

    def reset(self, depth_tokens: np.ndarray) -> None:
        if self._static():
            import torch

            with torch.inference_mode():  # its tensors were made in inference mode
                self.cache.reset()
        else:
            self.cache = self._new_cache(False)
        self._pos = 0
        for start in range(0, len(depth_tokens), DEPTH_CHUNK):
            chunk = depth_tokens[start:start + DEPTH_CHUNK]
            self._forward(*self._inputs(chunk, self._pos), self.cache)
            self._pos += len(chunk)
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
        return [self._timed_step(tokens[i:i + 1]) for i in range(len(tokens))]

    def _note_kv_bytes(self) -> None:
        layers = getattr(self.cache, "layers", None)
        if layers is None:
            return
        held = sum(_storage_bytes(tensor) for layer in layers for tensor in (getattr(layer, "keys", None),
                                                                            getattr(layer, "values", None))
                   if tensor is not None)
        self._kv_peak_bytes = max(self._kv_peak_bytes or 0, held)

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


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.runners.torch probe KIND INDEX QUANT...`: print {quant: reason} as one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[0] != "probe":
        print("usage: python -m bench.runners.torch probe cpu|cuda INDEX QUANTIZATION...", file=sys.stderr)
        return 2
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # libraries that print go to stderr, so stdout holds only the answer
    reasons = probe_quantizations(args[1], int(args[2]), args[3:])
    out.write(json.dumps(reasons) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

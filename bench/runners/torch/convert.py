"""GGUF -> safetensors folder, once, in bench's cache: transformers' GGUF parser is slow, and a PyTorch
deployment would convert once too."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.errors import BenchError, first_line

SOURCE_NOTE = "bench_source.txt"  # in a converted folder: which GGUF it came from, for the row's derived_from

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
        raise BenchError(
            f"transformers cannot load the GGUF file {gguf}: {type(exc).__name__}: "
            f"{first_line(exc)} (its GGUF support covers fewer architectures than llama.cpp)"
        ) from None
    # The weights are now plain tensors: drop the GGUF 'quantizer', which refuses to save.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    file_type = gguf_metadata(gguf).get("file_type") or "unknown type"
    note = f"{gguf.name} ({file_type} GGUF, dequantized to float32 by transformers {transformers.__version__})"
    (partial / SOURCE_NOTE).write_text(note + "\n", encoding="utf-8")
    os.replace(partial, target)


def read_source_note(folder: Path) -> str:
    try:
        return (folder / SOURCE_NOTE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""

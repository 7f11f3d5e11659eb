"""What the torch backend can load, checked before a worker loads it."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError
from bench.models.gguf import check_gguf


def check_torch_model(path: Path) -> None:
    """What the torch backend can load: a Hugging Face model folder with safetensors weights, or a GGUF file."""
    if path.is_file():
        check_gguf(path)
        return
    if not path.is_dir():
        raise BenchError(f"cannot read model {path}: not a file or folder")
    if not (path / "config.json").is_file():
        raise BenchError(
            f"{path} is not a Hugging Face model folder: it has no config.json "
            "(expected config.json, tokenizer files and *.safetensors, or a GGUF file)"
        )
    if not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.glob("*.bin"))[:3]
        found = f" (it has {', '.join(pickles)}: pickled weights can run code when loaded)" if pickles else ""
        raise BenchError(
            f"{path} has no *.safetensors weights{found}; the torch backend loads only safetensors: "
            "convert the checkpoint with transformers' save_pretrained(safe_serialization=True)"
        )

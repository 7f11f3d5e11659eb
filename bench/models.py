"""Model references -> local files.

References: a local path; `package:<python-package>/<file>` for a file shipped inside an
installed package (or assembled by the package's `assemble()` helper); `hf://<org>/<repo>/<file>`
(optionally `@<revision>`) fetched through huggingface_hub into its cache.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from bench.errors import BenchError, ModelUnavailable

if TYPE_CHECKING:
    from bench.suite import ModelSpec

GGUF_MAGIC = b"GGUF"


def cache_dir() -> Path:
    """bench's own cache (assembled and derived models). BENCH_CACHE_DIR overrides it."""
    root = os.environ.get("BENCH_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "bench"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class ResolvedModel:
    reference: str
    path: Path
    derived_from: str = ""


def resolve(reference: str) -> ResolvedModel:
    """Turn a reference into a readable local file, or raise ModelUnavailable saying how to supply it."""
    if reference.startswith("package:"):
        path = _resolve_package(reference)
    elif reference.startswith("hf://"):
        path = _resolve_hf(reference)
    else:
        path = Path(reference).expanduser()
        if not path.exists():
            raise ModelUnavailable(f"model file not found: {path}")
    return ResolvedModel(reference=reference, path=path)


def _resolve_package(reference: str) -> Path:
    spec = reference.removeprefix("package:")
    package, sep, filename = spec.partition("/")
    if not sep or not package or not filename:
        raise BenchError(f"bad model reference {reference!r}: expected package:<python-package>/<file>")
    if ".." in Path(filename).parts or Path(filename).is_absolute():
        raise BenchError(f"bad model reference {reference!r}: the file must lie inside the package")
    module_name = package.replace("-", "_")
    if importlib.util.find_spec(module_name) is None:
        raise ModelUnavailable(
            f"model package {package!r} is not installed (reference {reference})",
            hint=f"pip install {package.replace('_', '-')}  (or: pip install -e '.[models]')",
        )
    module = importlib.import_module(module_name)
    package_dir = Path(module.__file__ or "").parent
    shipped = package_dir / filename
    if shipped.exists():
        return shipped
    assemble = getattr(module, "assemble", None)
    if callable(assemble):
        # Packages that split a model across parts ship an assemble() that writes the whole file.
        target = cache_dir() / "assembled" / module_name / Path(filename).name
        try:
            return Path(assemble(target))
        except Exception as exc:  # the package's own error: report it as unavailable, don't crash the run
            raise ModelUnavailable(f"{reference}: {module_name}.assemble() failed: {exc}") from None
    raise ModelUnavailable(f"{reference}: package {module_name} has no file {filename!r}")


def parse_hf_reference(reference: str) -> tuple[str, str, str | None]:
    """hf://org/repo/path/in/repo.gguf[@revision] -> (repo_id, filename, revision)."""
    spec = reference.removeprefix("hf://")
    revision = None
    if "@" in spec:
        spec, revision = spec.rsplit("@", 1)
    parts = spec.split("/")
    if len(parts) < 3 or not all(parts):
        raise BenchError(f"bad model reference {reference!r}: expected hf://<org>/<repo>/<file>[@revision]")
    filename = "/".join(parts[2:])
    if spec.startswith("/") or ".." in parts or "\\" in spec:
        raise BenchError(f"bad model reference {reference!r}: '..', absolute paths and backslashes are not allowed")
    return f"{parts[0]}/{parts[1]}", filename, revision


def _resolve_hf(reference: str) -> Path:
    repo_id, filename, revision = parse_hf_reference(reference)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError as exc:
        raise ModelUnavailable(f"{reference}: huggingface_hub is not installed ({exc})") from None
    how = (
        "download the file elsewhere and put its local path in the suite, or pre-fill the Hugging Face cache "
        "(huggingface-cli download) and set HF_HUB_OFFLINE=1"
    )
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise ModelUnavailable(f"{reference}: not in the local Hugging Face cache and the hub is unreachable",
                               hint=how) from None
    except Exception as exc:  # network errors, 401/404 from the hub, ...
        raise ModelUnavailable(f"{reference}: cannot download from the Hugging Face hub: "
                               f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                               hint=how) from None


def check_gguf(path: Path) -> None:
    """Cheap sanity check before llama.cpp sees the file: a bad file must be an error, not a crash."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise BenchError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise BenchError(f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    except Exception as exc:
        raise BenchError(f"{path}: unreadable GGUF header ({type(exc).__name__}: {exc}); is the file truncated?") from None
    if end > size:
        raise BenchError(f"{path}: truncated GGUF: tensors need {end} bytes, the file has {size}")


def _field_value(reader: object, key: str) -> object | None:
    field = reader.fields.get(key)  # type: ignore[attr-defined]
    if field is None:
        return None
    try:
        return field.contents()
    except Exception:
        return None


def gguf_metadata(path: Path) -> dict[str, object]:
    """Row fields from a GGUF header: architecture, shape, trained context, file type, bits per weight."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(path))
    arch = str(_field_value(reader, "general.architecture") or "")

    def arch_int(name: str) -> int | None:
        value = _field_value(reader, f"{arch}.{name}")
        if isinstance(value, list):  # per-layer values (e.g. head counts that vary by layer)
            value = max(value) if value else None
        return int(value) if value is not None else None

    n_heads = arch_int("attention.head_count")
    n_embd = arch_int("embedding_length")
    head_dim = arch_int("attention.key_length") or (n_embd // n_heads if n_embd and n_heads else None)
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    weight_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    file_type_id = _field_value(reader, "general.file_type")
    try:
        file_type = LlamaFileType(int(file_type_id)).name.removeprefix("MOSTLY_") if file_type_id is not None else ""
    except ValueError:
        file_type = str(file_type_id)
    return {
        "arch": arch,
        "n_layers": arch_int("block_count"),
        "n_heads": n_heads,
        "n_kv_heads": arch_int("attention.head_count_kv") or n_heads,
        "head_dim": head_dim,
        "n_ctx_train": arch_int("context_length"),
        "file_type": file_type,
        "bits_per_weight": 8.0 * weight_bytes / n_params if n_params else None,
    }


def cell_model_reference(model: ModelSpec, quantization: str, backend: str) -> str:
    """Which reference holds this model at this quantization (before any derivation)."""
    if quantization in model.files:
        return model.files[quantization]
    if model.source is None:
        raise ModelUnavailable(
            f"model {model.id!r} has no file for quantization {quantization!r}; "
            f"its files: {', '.join(model.files) or 'none'}"
        )
    return model.source


def needs_derivation(model: ModelSpec, quantization: str, backend: str) -> bool:
    """True when a llama.cpp quantization must be derived from the model's source file."""
    return (
        backend == "llamacpp"
        and quantization not in model.files
        and quantization not in ("source", model.source_quantization)
    )

"""Derived quantizations: the ladder a suite lists, built from one source file with llama.cpp's quantize API.

Each derived file lives in a content-addressed cache,
`bench.models.cache_dir()/quantized/<source stem>-<source sha256>/<TYPE>-<llama.cpp version key>.gguf`,
with a `.json` beside it saying where it came from. It is built once: a file lock serialises racing
builders, the build writes a temporary file in the same folder, and os.replace() publishes it whole.
The quantization runs in a child process (`python -m bench.runners.llamacpp.quantize --child ...`, no shell), so a crash
inside llama.cpp becomes an error message instead of a dead run.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import BenchError, ModelUnavailable
from bench.models import ResolvedModel, cache_dir, check_gguf, gguf_metadata, resolve
from bench.models.gguf import is_valid_gguf
from bench.runners.llamacpp.quant_types import GGUF_QUANT_TYPES

if TYPE_CHECKING:
    from bench.suite import ModelSpec, Suite

UNQUANTIZED_TYPES = frozenset({"F32", "F16", "BF16"})
# llama.cpp refuses these without an importance matrix, which bench does not compute.
NEEDS_IMATRIX = frozenset({"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S", "IQ1_M", "Q2_K_S"})
STDERR_TAIL_LINES = 6


def _ftype_attribute(quantization: str) -> str:
    return "LLAMA_FTYPE_ALL_F32" if quantization == "F32" else f"LLAMA_FTYPE_MOSTLY_{quantization}"


def derivable_types() -> list[str]:
    """The quantization types this llama.cpp can derive without an importance matrix."""
    import llama_cpp

    return [t for t in GGUF_QUANT_TYPES if hasattr(llama_cpp, _ftype_attribute(t)) and t not in NEEDS_IMATRIX]


@functools.lru_cache(maxsize=1)
def llama_cpp_version_key() -> str:
    """llama-cpp-python's version plus ggml's version and commit: a new llama.cpp may quantize differently."""
    import llama_cpp

    from bench.runners.llamacpp.software import ggml_version

    return f"llama-cpp-python {llama_cpp.__version__}; ggml {ggml_version(llama_cpp) or 'unknown'}"


def _short_hash(text: str, length: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def source_sha256(path: Path) -> str:
    """sha256 of a model file, remembered per (path, size, mtime) so big files are hashed once."""
    path = path.resolve()
    stat = path.stat()
    index = cache_dir() / "quantized" / ".sources" / f"{_short_hash(str(path), 24)}.json"
    try:
        known = json.loads(index.read_text(encoding="utf-8"))
        if known["size"] == stat.st_size and known["mtime_ns"] == stat.st_mtime_ns:
            return str(known["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not hashed yet, or an unreadable index entry: hash again
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(8 * 2**20):
            digest.update(chunk)
    index.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomically(
        index, {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
    )
    return digest.hexdigest()


def derived_path(source: Path, quantization: str) -> Path:
    """Where the derived file lives: keyed by the source's content, the type and the llama.cpp version."""
    folder = f"{source.stem}-{source_sha256(source)[:16]}"
    return cache_dir() / "quantized" / folder / f"{quantization}-{_short_hash(llama_cpp_version_key(), 10)}.gguf"


def cached_derived_file(source: Path, quantization: str) -> Path | None:
    """The derived file if it was built already (planning uses it without building)."""
    target = derived_path(source, quantization)
    return target if target.is_file() else None


def source_file_type(path: Path, declared: str | None) -> str:
    """The source's quantization type from its header (general.file_type), else what the suite declares."""
    try:
        found = str(gguf_metadata(path).get("file_type") or "")
    except Exception:  # an unreadable header was reported by check_gguf already
        found = ""
    return found or (declared or "")


def check_derivation(model: ModelSpec, quantization: str, source_type: str) -> None:
    """A derivation bench can do: a known type, and no requantization unless the suite allows it."""
    valid = derivable_types()
    if quantization not in valid:
        why = (
            "needs an importance matrix, which bench does not compute"
            if quantization in NEEDS_IMATRIX
            else "is not a type this llama.cpp can produce"
        )
        raise BenchError(f"model {model.id!r}: quantization {quantization!r} {why}; valid types: {', '.join(valid)}")
    if source_type not in UNQUANTIZED_TYPES and not model.allow_requantize:
        allowed = ["source" + (f" ({source_type})" if source_type else ""), *model.files]
        raise BenchError(
            f"model {model.id!r}: deriving {quantization} from its source {model.source} requantizes an already "
            f"quantized file ({source_type or 'type unknown'}), which loses precision twice; allowed for this "
            f"model without requantizing: {', '.join(allowed)}",
            hint="set `allow_requantize: true` on the model in the suite, give an F16/BF16/F32 source, "
            f"or list a prequantized file under models[].files.{quantization}",
        )


@dataclass(frozen=True)
class Derived:
    """One derived file and how it was had."""

    path: Path
    quantization: str
    derived_from: str
    built: bool  # False: it came from the cache
    seconds: float


def _quantize_in_child(source: Path, output: Path, quantization: str, allow_requantize: bool) -> None:
    """Run llama_model_quantize in a child process; its crash or refusal becomes a BenchError."""
    command = [
        sys.executable,
        "-m",
        "bench.runners.llamacpp.quantize",
        "--child",
        str(source),
        str(output),
        quantization,
        "--threads",
        str(os.cpu_count() or 1),
    ]
    if allow_requantize:
        command.append("--allow-requantize")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)  # noqa: S603
        try:
            returncode = process.wait()
        except BaseException:  # Ctrl-C: the child must not outlive us
            process.kill()
            process.wait()
            raise
        if returncode == 0:
            return
        log.seek(0)
        lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    detail = " | ".join(lines[-STDERR_TAIL_LINES:]) or "no output"
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    raise BenchError(f"llama.cpp could not quantize {source} to {quantization} ({how}): {detail}")


def build_derived(
    source: Path, quantization: str, *, source_type: str, allow_requantize: bool, reference: str
) -> Derived:
    """The derived file, from the cache or built now (once, even when several processes race)."""
    from filelock import FileLock

    target = derived_path(source, quantization)
    if is_valid_gguf(target):  # published by os.replace, so whole; checked in case the disk says otherwise
        return Derived(target, quantization, source_type, built=False, seconds=0.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with FileLock(str(target.with_suffix(".lock"))):
        if is_valid_gguf(target):  # another process built it while we waited
            return Derived(target, quantization, source_type, built=False, seconds=0.0)
        # Same folder as the target, so os.replace() is an atomic rename; the pid keeps racers apart.
        temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp.gguf")
        try:
            _quantize_in_child(source, temporary, quantization, allow_requantize)
            check_gguf(temporary)
            _write_json_atomically(
                target.with_suffix(".json"),
                {
                    "source_reference": reference,
                    "source_path": str(source),
                    "source_sha256": source_sha256(source),
                    "source_type": source_type,
                    "quantization": quantization,
                    "llama_cpp": llama_cpp_version_key(),
                    "built_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "seconds": round(time.perf_counter() - start, 2),
                    "bytes": temporary.stat().st_size,
                },
            )
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    return Derived(target, quantization, source_type, built=True, seconds=time.perf_counter() - start)


def derive(model: ModelSpec, quantization: str) -> Derived:
    """Resolve the model's source and derive `quantization` from it (ModelUnavailable when the source is not)."""
    if model.source is None:
        raise ModelUnavailable(
            f"model {model.id!r} has no `source` to derive {quantization} from; "
            f"its files: {', '.join(model.files) or 'none'}"
        )
    source = resolve(model.source)
    check_gguf(source.path)
    source_type = source_file_type(source.path, model.source_quantization)
    if quantization == source_type:  # nothing to derive: the source already is that type
        return Derived(source.path, quantization, "", built=False, seconds=0.0)
    check_derivation(model, quantization, source_type)
    return build_derived(
        source.path,
        quantization,
        source_type=source_type,
        allow_requantize=model.allow_requantize,
        reference=model.source,
    )


def derived_model(suite: Suite, model: ModelSpec, quantization: str) -> ResolvedModel:
    """The suite's model at a derived quantization, as a local file (built into the cache when needed)."""
    derived = derive(model, quantization)
    return ResolvedModel(
        reference=model.source or "",
        path=derived.path,
        derived_from=derived.derived_from,
        build_seconds=derived.seconds if derived.built else None,
    )


# ------------------------------------------------------------------------------------------ bench quantize


# ------------------------------------------------------------------------------------------ child process


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.runners.llamacpp.quantize", description="internal: one llama.cpp quantize"
    )
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "OUTPUT", "TYPE"), required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--allow-requantize", action="store_true")
    args = parser.parse_args(argv)
    source, output, quantization = args.child
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _ftype_attribute(quantization))
    params.allow_requantize = args.allow_requantize
    params.nthread = args.threads
    return int(llama_cpp.llama_model_quantize(source.encode(), output.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))

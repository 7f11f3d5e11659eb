"""Synthetic models: a known model's exact shape with random weights, so speed and memory can be measured
before (or without) downloading it. Speed and memory of a dense transformer depend on its shape and
weight types, not on the weight values; quality does, so quality must never be measured on these.

`synthetic_model("DeepSeek-R1-Distill-Qwen-1.5B", "Q4_K_M")`:

1. writes a small *proxy* of the model as F16 (bench.models.synthetic_gguf: the converter's tensor names,
   metadata and vocabulary, every weight matrix cut to PROXY_ROWS rows);
2. quantizes the proxy with llama.cpp's quantizer through bench.runners.llamacpp.quantize.build_derived (content-addressed
   cache, built once under a file lock however many processes ask). The quantizer chooses each tensor's type
   from its name, row length and the model's hyperparameters, never from its row count, so the proxy gets the
   full model's type mix; and its rows are genuinely quantized random values;
3. writes the full-size model tensor by tensor, each one with the type the quantizer chose, its rows drawn at
   random from the proxy's quantized rows. Quantizing billions of random numbers would take the quantizer
   minutes to hours on a small machine and give the same bytes per tensor.

F16 is written directly at full size (the converter's output). There is no full-size scratch file: the proxy
(a few MB) and the results are kept in `cache_dir()/synthetic/<name>-<shape key>/`; delete that folder to
reclaim the space. The proxy's quantizations live in the quantization cache, keyed by the proxy's content.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.models import ResolvedModel, cache_dir, check_gguf, read_gguf_header
from bench.models.catalog import (
    TransformerShape,
    known_shape,
    known_synthetic_names,
    safe_name,
    shape_from_config_file,
)
from bench.models.gguf import is_valid_gguf
from bench.models.synthetic_gguf import (
    LAYOUT_VERSION,
    TensorSpec,
    estimated_file_bytes,
    parameter_count,
    proxy_plan,
    tensor_plan,
    with_types,
    write_gguf,
)

__all__ = [
    "Progress",
    "known_synthetic_names",
    "synthesized_model",
    "synthetic_model",
    "synthetic_quantization_reason",
    "synthetic_shape",
]

PROXY_ROWS = 32  # rows per proxy matrix: the distinct quantized rows each full tensor is drawn from
DISK_MARGIN_BYTES = 256 * 2**20  # left free after a write, so the file system is not filled to the last byte
PROGRESS_STEP_BYTES = 64 * 2**20  # how often a long write reports
SAID_PERCENT_STEP = 10  # a long write is said to the user at every tenth of it, not at every report


@dataclass(frozen=True)
class Progress:
    """Where a synthesis is: `stage` ("write F16", "quantize proxy Q4_K_M", "write Q4_K_M"), bytes done of
    the stage's total."""

    stage: str
    done_bytes: int
    total_bytes: int


ProgressCallback = Callable[[Progress], None]


def synthetic_shape(name_or_config: str | Path) -> TransformerShape:
    """A known model's shape by name (synthetic:<name>), or a Hugging Face config.json's (a Path)."""
    if isinstance(name_or_config, Path):
        return shape_from_config_file(name_or_config)
    return known_shape(name_or_config)


def synthetic_model(
    name_or_config: str | Path | TransformerShape, quantization: str, progress: ProgressCallback | None = None
) -> Path:
    """The synthetic model at `quantization` (F16, or a type llama.cpp derives without an imatrix), as a GGUF
    file in bench's cache, built on first use."""
    shape = name_or_config if isinstance(name_or_config, TransformerShape) else synthetic_shape(name_or_config)
    folder = cache_dir() / "synthetic" / f"{safe_name(shape.name)}-{shape.key()}-v{LAYOUT_VERSION}"
    if quantization == "F16":
        return _f16_model(shape, folder, progress)
    return _quantized_model(shape, folder, quantization, progress)


def synthetic_quantizations() -> list[str]:
    """What synthetic weights can be built at: F16 (the converter's output) and every type llama.cpp derives
    without an importance matrix (the IQ1/IQ2 types need one, which random weights cannot give)."""
    from bench.runners.llamacpp.quantize import derivable_types

    return ["F16", *(t for t in derivable_types() if t != "F16")]


def synthetic_quantization_reason(quantization: str) -> str:
    """'' when synthetic weights can be built at `quantization`, else why not (BackendSpec's check)."""
    allowed = synthetic_quantizations()
    if quantization in allowed:
        return ""
    return (
        f"synthetic weights cannot be built at {quantization}: they take F16 and the types llama.cpp derives "
        f"without an importance matrix ({', '.join(allowed[1:])})"
    )


def synthesized_model(
    shape: TransformerShape, quantization: str, say: Callable[[str], None] | None = None
) -> ResolvedModel:
    """BackendSpec.synthesize: the synthetic GGUF as a resolved model, its build said at every tenth."""
    reason = synthetic_quantization_reason(quantization)
    if reason:
        raise BenchError(f"synthetic:{shape.name}: {reason}")
    path = synthetic_model(shape, quantization, _said_progress(shape.name, say) if say else None)
    return ResolvedModel(reference=f"synthetic:{shape.name}", path=path, weights="synthetic", weights_shape=shape.name)


def _said_progress(name: str, say: Callable[[str], None]) -> ProgressCallback:
    """Progress as text lines: a stage's start, each tenth of a long write, and its end."""
    said: dict[str, int] = {}

    def on_progress(progress: Progress) -> None:
        percent = 100 * progress.done_bytes // progress.total_bytes if progress.total_bytes else 100
        step = percent // SAID_PERCENT_STEP * SAID_PERCENT_STEP
        if said.get(progress.stage, -1) >= step:
            return
        said[progress.stage] = step
        size = f" ({progress.total_bytes / 2**20:,.0f} MiB)" if progress.total_bytes > 1 else ""
        say(f"synthetic {name}: {progress.stage}{size}: {percent}%")

    return on_progress


def _seed(shape: TransformerShape) -> int:
    return int(shape.key(), 16) % 2**32  # the same shape gets the same bytes on every machine


def _f16_model(shape: TransformerShape, folder: Path, progress: ProgressCallback | None) -> Path:
    plan = tensor_plan(shape)
    return _published(
        folder / f"{safe_name(shape.name)}-F16.gguf",
        estimated_file_bytes(shape, plan),
        progress,
        "write F16",
        lambda path, report: write_gguf(shape, path, plan, seed=_seed(shape), on_bytes=report),
        {"shape": asdict(shape), "parameters": parameter_count(shape), "quantization": "F16"},
    )


def _quantized_model(
    shape: TransformerShape, folder: Path, quantization: str, progress: ProgressCallback | None
) -> Path:
    from bench.runners.llamacpp.quantize import build_derived, derivable_types

    if quantization not in derivable_types():
        raise BenchError(
            f"synthetic:{shape.name}: quantization {quantization!r} cannot be derived; "
            f"valid types: F16, {', '.join(derivable_types())}"
        )
    proxy_tensors = proxy_plan(shape, PROXY_ROWS)
    proxy = _published(
        folder / f"{safe_name(shape.name)}-proxy.gguf",
        estimated_file_bytes(shape, proxy_tensors),
        None,
        "write proxy",
        lambda path, report: write_gguf(shape, path, proxy_tensors, seed=_seed(shape)),
        {"shape": asdict(shape), "proxy_rows": PROXY_ROWS},
    )
    if progress is not None:
        progress(Progress(f"quantize proxy {quantization}", 0, 1))
    derived = build_derived(
        proxy, quantization, source_type="F16", allow_requantize=False, reference=f"synthetic:{shape.name} (proxy)"
    ).path
    if progress is not None:
        progress(Progress(f"quantize proxy {quantization}", 1, 1))
    plan, file_type = _quantized_plan(shape, derived)
    # Named after the quantized proxy (<TYPE>-<llama.cpp version key>): a new llama.cpp may choose other types.
    return _published(
        folder / f"{safe_name(shape.name)}-{derived.name}",
        estimated_file_bytes(shape, plan),
        progress,
        f"write {quantization}",
        lambda path, report: write_gguf(
            shape, path, plan, seed=_seed(shape), file_type=file_type, rows=_proxy_rows(derived, plan), on_bytes=report
        ),
        {
            "shape": asdict(shape),
            "parameters": parameter_count(shape),
            "quantization": quantization,
            "types_and_rows_from": str(derived),
        },
    )


def _quantized_plan(shape: TransformerShape, quantized_proxy: Path) -> tuple[list[TensorSpec], int]:
    header = read_gguf_header(quantized_proxy)
    types = {tensor.name: tensor.type_name for tensor in header.tensors}
    try:
        plan = with_types(tensor_plan(shape), types)
    except ValueError as exc:
        raise BenchError(f"{quantized_proxy}: not the quantized proxy of {shape.name}: {exc}") from None
    order = {name: index for index, name in enumerate(types)}  # the quantizer's tensor order, kept
    plan.sort(key=lambda spec: order[spec.name])
    return plan, int(header.get("general.file_type") or 0)  # type: ignore[call-overload]


def _proxy_rows(quantized_proxy: Path, plan: list[TensorSpec]) -> Callable[[str], np.ndarray]:
    """Reads one quantized proxy tensor at a time, as rows of bytes."""
    tensors = {tensor.name: tensor for tensor in read_gguf_header(quantized_proxy).tensors}
    row_bytes = {spec.name: spec.row_bytes for spec in plan}

    def rows(name: str) -> np.ndarray:
        tensor = tensors[name]
        with quantized_proxy.open("rb") as handle:
            handle.seek(tensor.offset)
            data = np.frombuffer(handle.read(tensor.n_bytes), dtype=np.uint8)
        return data.reshape(-1, row_bytes[name])

    return rows


def _published(
    target: Path,
    needed_bytes: int,
    progress: ProgressCallback | None,
    stage: str,
    build: Callable[[Path, Callable[[int], None] | None], None],
    provenance: dict[str, object],
) -> Path:
    """`target`, built once: under a file lock, into a temporary file published whole by os.replace()."""
    from filelock import FileLock

    if is_valid_gguf(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_suffix(".lock"))):
        if is_valid_gguf(target):  # another process built it while we waited
            return target
        _check_free_disk(target.parent, needed_bytes, target.name)
        temporary = target.with_name(f".{target.stem}.{os.getpid()}.tmp.gguf")
        started = time.perf_counter()
        try:
            build(temporary, _byte_reporter(progress, stage, needed_bytes))
            check_gguf(temporary)
            target.with_suffix(".json").write_text(
                json.dumps(
                    {
                        **provenance,
                        "bytes": temporary.stat().st_size,
                        "seconds": round(time.perf_counter() - started, 2),
                        "weights": (
                            "synthetic: random normal (std 0.02), norms 1, quantized blocks' scales spread as in real "
                            "files; quality cannot be measured on them"
                        ),
                    },
                    indent=2,
                    sort_keys=True,
                    default=str,
                ),
                encoding="utf-8",
            )
            os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
    if progress is not None:
        progress(Progress(stage, needed_bytes, needed_bytes))
    return target


def _byte_reporter(progress: ProgressCallback | None, stage: str, total: int) -> Callable[[int], None] | None:
    if progress is None:
        return None
    state = {"done": 0, "reported": 0}

    def on_bytes(count: int) -> None:
        state["done"] += count
        if state["done"] - state["reported"] >= PROGRESS_STEP_BYTES:
            state["reported"] = state["done"]
            progress(Progress(stage, state["done"], total))

    return on_bytes


def _check_free_disk(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_MARGIN_BYTES:
        raise BenchError(
            f"not enough disk for synthetic model {what}: it needs {needed + DISK_MARGIN_BYTES:,} "
            f"bytes free in {folder} ({needed:,} for the file + {DISK_MARGIN_BYTES:,} spare), "
            f"{free:,} are free",
            hint="free space there, or point BENCH_CACHE_DIR at a larger disk",
        )

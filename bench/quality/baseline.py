"""The baseline cache on disk: one compact file per model file x text x quality settings x logits settings.

A baseline is evaluated once and reused by every later run that would compute the same logits: the file name
carries the model file's hash, the text's hash, the quality settings (context, top-k, chunks) and every
setting of the baseline run that changes its logits (backend, device kind, KV cache type, flash attention).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import BenchError
from bench.quality.numerics import TopK
from bench.suite import QualitySpec

BASELINE_FORMAT = 1


@dataclass
class Baseline:
    quantization: str
    tokens: np.ndarray  # int32: the text's tokens that the chunks cover
    top_k: TopK


def _cache_folder() -> Path:
    from bench.models import cache_dir  # lazily: bench.models pulls in model resolution

    return cache_dir() / "baselines"


def file_sha256(path: Path) -> str:
    """SHA-256 of a model file (or of every file of a model folder), remembered by path, size and mtime."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo_path = _cache_folder() / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo.get(stamp):
        return str(memo[stamp])
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    memo[stamp] = digest.hexdigest()
    _atomic_write(memo_path, json.dumps(memo, indent=0).encode())
    return memo[stamp]


def settings_slug(settings: Mapping[str, Any]) -> str:
    """The logits settings as a readable file-name part, in the order given: `llamacpp-cpu-q8_0-auto`."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]", "_", str(value).lower()) for value in settings.values())


def baseline_path(model_sha256: str, text_sha256: str, spec: QualitySpec, settings: Mapping[str, Any]) -> Path:
    """Where a baseline lives: keyed by model file, text, context, top-k, chunk count and logits settings."""
    name = (
        f"{model_sha256[:16]}-{text_sha256[:16]}-c{spec.context}-k{spec.top_k}-n{spec.max_chunks}"
        f"-{settings_slug(settings)}.npz"
    )
    return _cache_folder() / name


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_baseline(path: Path, baseline: Baseline) -> None:
    buffer = io.BytesIO()
    top = baseline.top_k
    np.savez(
        buffer,
        format=np.int32(BASELINE_FORMAT),
        quantization=np.str_(baseline.quantization),
        tokens=baseline.tokens.astype(np.int32),
        **{name: getattr(top, name) for name in TopK.FIELDS},
    )
    _atomic_write(path, buffer.getvalue())


def load_baseline(path: Path) -> Baseline:
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != BASELINE_FORMAT:
                raise BenchError(
                    f"{path}: baseline cache format {int(data['format'])}, expected "
                    f"{BASELINE_FORMAT}; delete the file to recompute it"
                )
            return Baseline(
                quantization=str(data["quantization"]),
                tokens=data["tokens"],
                top_k=TopK(*(data[name] for name in TopK.FIELDS)),
            )
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"{path}: unreadable baseline cache ({exc}); delete the file to recompute it") from None

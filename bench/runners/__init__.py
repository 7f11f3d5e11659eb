"""Backends, each one module behind bench.runners.base.Runner."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from bench.errors import BenchError
from bench.runners.base import Runner
from bench.suite import Cell

# backend name -> (module, class, the Python package it needs)
_BACKENDS = {
    "llamacpp": ("bench.runners.llamacpp", "LlamaCppRunner", "llama_cpp"),
    "torch": ("bench.runners.torch", "TorchRunner", "torch"),
}
INSTALL_HINTS = {
    "llamacpp": "pip install llama-cpp-python (scripts/install.sh picks build flags for this CPU)",
    "torch": "pip install -e '.[torch]'  (pins the CPU/CUDA torch wheel this project is tested with)",
}


def backend_missing_reason(backend: str) -> str:
    """'' if the backend can run here, else why not and how to fix it."""
    module, _cls, needs = _BACKENDS[backend]
    if importlib.util.find_spec(needs) is None:
        return f"backend {backend} needs the Python package {needs!r}, which is not installed: {INSTALL_HINTS[backend]}"
    if importlib.util.find_spec(module) is None:
        return f"backend {backend} is not available in this version of bench"
    return ""


def create_runner(backend: str, model_path: Path, load_cell: Cell) -> Runner:
    if backend not in _BACKENDS:
        raise BenchError(f"unknown backend {backend!r}; allowed: {', '.join(_BACKENDS)}")
    module_name, class_name, _needs = _BACKENDS[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model_path, load_cell)

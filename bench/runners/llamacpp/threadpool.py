"""A persistent ggml CPU thread pool attached to each context, as llama-bench runs.

Without one, ggml's CPU backend creates and joins a disposable pool of threads for every graph it computes
(ggml-cpu.c, `disposable_threadpool`), i.e. for every llama_decode call: thread start-up on each decoded
token, which llama-bench does not pay (it attaches a pool, polling level 50 by default). llama-cpp-python
does not bind these functions, so they are called through ctypes on the libraries it ships.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import Any

GGML_MAX_N_THREADS = 512  # ggml.h
LLAMA_BENCH_POLL = 50  # llama-bench's default --poll


class ThreadpoolParams(ctypes.Structure):
    """struct ggml_threadpool_params (ggml.h)."""

    _fields_ = [
        ("cpumask", ctypes.c_bool * GGML_MAX_N_THREADS),
        ("n_threads", ctypes.c_int),
        ("prio", ctypes.c_int),
        ("poll", ctypes.c_uint32),
        ("strict_cpu", ctypes.c_bool),
        ("paused", ctypes.c_bool),
    ]


def _library(llama_cpp: Any, stem: str) -> ctypes.CDLL:
    suffix = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    folder = Path(llama_cpp.__file__).parent / "lib"
    return ctypes.CDLL(str(folder / f"{'' if sys.platform == 'win32' else 'lib'}{stem}{suffix}"))


class ThreadPool:
    """One ggml thread pool of n_threads, freed with close()."""

    def __init__(self, llama_cpp: Any, n_threads: int, poll: int = LLAMA_BENCH_POLL) -> None:
        base, cpu = _library(llama_cpp, "ggml-base"), _library(llama_cpp, "ggml-cpu")
        base.ggml_threadpool_params_default.restype = ThreadpoolParams
        base.ggml_threadpool_params_default.argtypes = [ctypes.c_int]
        cpu.ggml_threadpool_new.restype = ctypes.c_void_p
        cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(ThreadpoolParams)]
        cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
        self._free = cpu.ggml_threadpool_free
        params = base.ggml_threadpool_params_default(n_threads)
        params.poll = poll
        self.pointer = cpu.ggml_threadpool_new(ctypes.byref(params))
        if not self.pointer:
            raise RuntimeError(f"ggml could not create a thread pool of {n_threads} threads")
        attach = llama_cpp.llama_cpp._lib.llama_attach_threadpool
        attach.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        attach.restype = None
        self._attach = attach
        detach = llama_cpp.llama_cpp._lib.llama_detach_threadpool
        detach.argtypes = [ctypes.c_void_p]
        detach.restype = None
        self._detach = detach

    def attach(self, ctx: Any) -> None:
        """Prompt batches and single tokens both run on this pool."""
        self._attach(ctx, self.pointer, self.pointer)

    def detach(self, ctx: Any) -> None:
        self._detach(ctx)

    def close(self) -> None:
        if self.pointer:
            self._free(self.pointer)
            self.pointer = None

"""llama.cpp's software probe: the llama-cpp-python version and the build (ggml version, features, GPU offload).

llama_cpp is imported lazily inside probe_llama_cpp(): loading its shared library (and CUDA) is slow.
"""

from __future__ import annotations

import ctypes
from typing import Any

from bench.hardware import BackendSoftware
from bench.hardware.probe import as_text, attempt, dist_version


def summarise_system_info(text: str) -> str:
    """'CUDA : ARCHS = 900 | USE_GRAPHS = 1 | CPU : AVX = 1 | AVX512 = 0 |' -> 'CUDA: ARCHS=900 USE_GRAPHS; CPU: AVX'."""
    sections: dict[str, list[str]] = {}
    backend = ""
    for token in text.split("|"):
        head, colon, rest = token.partition(":")
        if colon and "=" not in head:  # "BACKEND : KEY = VALUE" starts a new backend
            backend, token = head.strip(), rest
        key, equals, value = (part.strip() for part in token.partition("="))
        items = sections.setdefault(backend, [])
        if key and value != "0":  # features compiled out are noise
            items.append(key if not equals or value == "1" else f"{key}={value}")
    return "; ".join(
        f"{name}: {' '.join(items)}" if name else " ".join(items) for name, items in sections.items() if name or items
    )


def ggml_version(llama_cpp: Any) -> str:
    # Recent ggml exports ggml_version()/ggml_commit(); reachable through the loaded libllama handle.
    lib = getattr(getattr(llama_cpp, "llama_cpp", None), "_lib", None)
    found = {}
    for symbol in ("ggml_version", "ggml_commit"):
        fn = attempt(getattr, lib, symbol)
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_char_p, []
            found[symbol] = as_text(attempt(fn))
    version, commit = found.get("ggml_version", ""), found.get("ggml_commit", "")
    return f"{version} (commit {commit})".strip() if commit else version


def probe_llama_cpp(name: str) -> BackendSoftware:
    """The llama-cpp-python version, the llama.cpp build summary and whether GPU offload is compiled in."""
    version = dist_version("llama_cpp_python")
    try:
        import llama_cpp  # lazily: loading the shared library (and CUDA) is slow
    except Exception:  # noqa: BLE001 - not installed or a broken build: both mean "no llama.cpp here"
        return BackendSoftware(name, version)
    version = version or as_text(getattr(llama_cpp, "__version__", ""))
    ggml = ggml_version(llama_cpp)
    info = summarise_system_info(as_text(attempt(llama_cpp.llama_print_system_info)))
    build = "; ".join(p for p in (f"ggml {ggml}" if ggml else "", info) if p)
    offload = bool(attempt(llama_cpp.llama_supports_gpu_offload))
    return BackendSoftware(name, version, build, offload)

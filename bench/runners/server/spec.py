"""The server backend as the rest of bench sees it (bench.runners.registry).

It measures a server over HTTP: llama-server, which bench starts per load group from the cell's GGUF file and
settings (its knobs are llama.cpp's, shared), or any OpenAI-compatible URL a suite names (its `server:` block).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.runners.server import knobs, load_knobs
from bench.runners.server.software import INSTALL_HINT, llama_server_path, missing_server_reason, probe_llama_server
from bench.runners.spec import BackendSpec
from bench.suite.schema import SOURCE_QUANT

if TYPE_CHECKING:
    from bench.hardware import Fingerprint
    from bench.suite import Cell

NAME = "server"
# llama.cpp's settings a llama-server is started with: the same knobs, the same meaning, as the llamacpp backend's.
SHARED_KNOBS = ("n_gpu_layers", "n_batch", "n_ubatch", "flash_attn", "kv_cache_type")


def _gguf_quantizations() -> tuple[str, ...]:
    """The file types a GGUF may have (the names bench uses for them): what llama-server loads."""
    from gguf import LlamaFileType

    names = (t.name.removeprefix("MOSTLY_").removeprefix("ALL_") for t in LlamaFileType if t.name != "GUESSED")
    return tuple(dict.fromkeys(names))


def _device_reason(fingerprint: Fingerprint, kind: str, index: int) -> str:
    return ""  # a server the suite names runs wherever it runs; the embedded one is checked per cell


def _cell_reason(cell: Cell) -> str:
    """The embedded llama-server (no `server:` block) must be built, with CUDA for a GPU cell."""
    if cell.setting("server_url"):
        return ""
    missing = missing_server_reason()
    if missing:
        return missing
    binary = llama_server_path()
    if cell.device_kind == "cuda" and binary is not None and not any(binary.parent.glob("libggml-cuda*")):
        return f"llama-server at {binary} was built without CUDA (no libggml-cuda next to it): rebuild it with CUDA"
    return ""


def _check_gguf(path: Path) -> None:
    from bench.models import check_gguf

    check_gguf(path)


def _model_fields(path: Path) -> dict[str, Any]:
    from bench.models import gguf_metadata

    return gguf_metadata(path)


SPEC = BackendSpec(
    name=NAME,
    quantizations=(SOURCE_QUANT, *_gguf_quantizations()),
    python_package="httpx2",
    install_hint=f"pip install httpx2; for the embedded server, {INSTALL_HINT}",
    engine="bench.runners.server.runner:ServerEngine",
    gives_logits=False,
    device_kinds=("cpu", "cuda"),
    device_reason=_device_reason,
    cell_reason=_cell_reason,
    check_model_file=_check_gguf,
    model_fields=_model_fields,
    knobs=knobs.KNOBS + load_knobs.KNOBS,
    shares_knobs=SHARED_KNOBS,
    suite_block=knobs.BLOCK,
    suite_settings=load_knobs.SLO_SETTINGS,
    probe_software=probe_llama_server,
)

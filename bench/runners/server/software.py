"""Where llama-server is, and its version (`llama-server --version`) as the backend's software columns."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from bench.hardware import BackendSoftware

SERVER_ENV = "BENCH_LLAMA_SERVER"  # a llama-server binary to use instead of the one scripts/build_llama_tools.sh built
INSTALL_HINT = (
    "build it once with `BENCH_BUILD_SERVER=1 ./scripts/install.sh` (or scripts/build_llama_tools.sh: offline, "
    "from the llama.cpp source llama-cpp-python vendors, into ~/.cache/bench/llama-tools/build/bin), set "
    "BENCH_LLAMA_SERVER=/path/to/llama-server, or measure a server already running: `server: {url: ...}` in the suite"
)


def tools_bin() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bench" / "llama-tools" / "build" / "bin"


def llama_server_path() -> Path | None:
    """The llama-server binary: $BENCH_LLAMA_SERVER, the tools cache, or one on PATH; None when there is none."""
    configured = os.environ.get(SERVER_ENV)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    built = tools_bin() / "llama-server"
    if built.is_file():
        return built
    found = shutil.which("llama-server")
    return Path(found) if found else None


def missing_server_reason() -> str:
    """Why there is no llama-server to start ('' when there is one), with how to get one."""
    configured = os.environ.get(SERVER_ENV)
    if configured and not Path(configured).is_file():
        return f"{SERVER_ENV}={configured} is not a file: point it at a llama-server binary, or unset it"
    return "" if llama_server_path() is not None else f"llama-server is not built: {INSTALL_HINT}"


def server_version(binary: Path) -> tuple[str, str]:
    """(version, build) from `llama-server --version`, e.g. ('7012 (abc1234)', 'built with cc 12 for x86_64')."""
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "", ""
    version, build = "", ""
    for line in (done.stdout + done.stderr).splitlines():
        if line.startswith("version:"):
            version = line.removeprefix("version:").strip()
        elif line.startswith("built with"):
            build = line.strip()
    return version, build


def probe_llama_server(name: str) -> BackendSoftware:
    binary = llama_server_path()
    if binary is None:
        return BackendSoftware(name, "")
    version, build = server_version(binary)
    return BackendSoftware(name, version, build)

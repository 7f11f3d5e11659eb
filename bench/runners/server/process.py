"""llama-server as bench starts it: on 127.0.0.1 at an ephemeral port, with one cell's settings.

It runs in its own process group (stopped as a group at the end, on a timeout and on Ctrl-C) and gets SIGKILL
when the worker that started it dies (PR_SET_PDEATHSIG: the executor kills a worker with SIGKILL, which no
cleanup code survives). Its stderr goes to a file whose last lines become the reason of a failure.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2

from bench.errors import BenchError

STDERR_TAIL_LINES = 12
HEALTH_POLL_S = 0.1
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class ServerSettings:
    """What a llama-server is started with; a cell that needs other settings gets a fresh server."""

    model_path: Path
    slots: int  # --parallel: sequences served at once
    context: int  # the whole KV cache: slots x per-slot context
    threads: int
    n_gpu_layers: int
    n_batch: int
    n_ubatch: int
    flash_attn: str  # auto | on | off
    kv_cache_type: str

    def arguments(self, port: int) -> list[str]:
        return [
            "--model", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--parallel", str(self.slots),
            "--ctx-size", str(self.context),
            "--threads", str(self.threads),
            "--threads-batch", str(self.threads),
            "--n-gpu-layers", str(self.n_gpu_layers),
            "--batch-size", str(self.n_batch),
            "--ubatch-size", str(self.n_ubatch),
            "--flash-attn", self.flash_attn,
            "--cache-type-k", self.kv_cache_type,
            "--cache-type-v", self.kv_cache_type,
            "--no-webui",
            "--metrics",
        ]  # fmt: skip


def free_port() -> int:
    """An ephemeral port on the loopback interface (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL when the worker dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


class LlamaServer:
    """One running llama-server."""

    def __init__(self, binary: Path, settings: ServerSettings, start_timeout_s: float) -> None:
        self.settings = settings
        self.port = free_port()
        self._stderr = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [str(binary), *settings.arguments(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            process_group=0,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - a prctl before exec, nothing that could deadlock
        )
        try:
            self._wait_healthy(start_timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        try:
            text = Path(self._stderr.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exited(self, grace_s: float = 0.0) -> int | None:
        """The exit code once the server has exited (negative: the signal), else None. `grace_s`: how long to wait
        for it (a killed server's connections close before the kernel reports its exit)."""
        if grace_s > 0:
            try:
                return self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                return None
        return self.process.poll()

    def failure(self, what: str) -> BenchError:
        code = self.exited()
        state = f"exited with code {code}" if code is not None else "is running"
        return BenchError(f"llama-server {what} ({state}); its last stderr lines:\n{self.stderr_tail()}")

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx2.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.exited() is not None:
                    raise self.failure("did not start")
                try:
                    if client.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                        return
                except httpx2.HTTPError:
                    pass  # not listening yet, or still loading the model (503)
                time.sleep(HEALTH_POLL_S)
        raise self.failure(f"was not healthy within {timeout_s:g} s")

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a grace period; idempotent."""
        if self.process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._stderr.close()
        Path(self._stderr.name).unlink(missing_ok=True)

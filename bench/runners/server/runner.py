"""The server backend's engine: a llama-server it starts (per load group, restarted when a cell needs other
settings) or the server a suite's `server:` block names, measured by N closed-loop users streaming requests."""

from __future__ import annotations

import asyncio
import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.hardware import resolve_threads
from bench.runners.base import CONTEXT_ROUND, CellEngine, EnergyMeter, LoadInfo
from bench.runners.server.arrivals import profile_of
from bench.runners.server.client import Endpoint, served_models, served_parameters, server_identity, stream_request
from bench.runners.server.fields import request_fields
from bench.runners.server.load import ClosedLoop
from bench.runners.server.process import LlamaServer, ServerSettings
from bench.runners.server.served import ServedLoad, Target
from bench.runners.server.shapes import PromptMaker, Turn, request_body
from bench.runners.server.software import llama_server_path, missing_server_reason
from bench.runners.server.stream import RequestRecord
from bench.runners.server.tokens import TokenCounter
from bench.suite import Cell

TEMPLATE_TOKENS = 64  # a chat template's own tokens per request, on top of the prompt (room in each slot)
START_TIMEOUT_S = 300.0
EXIT_GRACE_S = 2.0  # after failed requests, how long a dying embedded server gets to be seen as exited
PATHS = {"chat": "/chat/completions", "completions": "/completions"}


def _api_key(variable: str) -> str:
    if not variable:
        return ""
    key = os.environ.get(variable, "")
    if not key:
        raise BenchError(
            f"server: {{api_key_env: {variable}}}: the environment variable {variable} is not set (or empty)"
        )
    return key


def server_settings(model_path: Path, cell: Cell) -> ServerSettings:
    slots = cell.setting("parallel")
    # A conversation of `turns` requests holds every turn's prompt, answer and template tokens at its last.
    per_slot = cell.depth + cell.setting("turns") * (cell.prompt_tokens + cell.gen_tokens + TEMPLATE_TOKENS)
    per_slot = -(-per_slot // CONTEXT_ROUND) * CONTEXT_ROUND
    return ServerSettings(
        model_path=model_path,
        slots=slots,
        context=slots * per_slot,
        threads=resolve_threads(cell.setting("threads")),
        n_gpu_layers=cell.setting("n_gpu_layers"),
        n_batch=cell.setting("n_batch"),
        n_ubatch=cell.setting("n_ubatch"),
        flash_attn=cell.setting("flash_attn"),
        kv_cache_type=cell.setting("kv_cache_type"),
    )


class ServerEngine(CellEngine):
    backend = "server"

    def __init__(self, model_path: Path, load_cell: Cell) -> None:
        self.model_path = model_path
        self.url = str(load_cell.setting("server_url") or "")
        self.model_name = str(load_cell.setting("server_model") or "")
        self.api_key = _api_key(str(load_cell.setting("server_api_key_env") or ""))
        self.load_cell = load_cell
        self.server: LlamaServer | None = None
        self.described: dict[str, Any] = {}
        self.served = ServedLoad()
        # Prompts this engine has made: each request gets a new number, so a cell measured again (or its
        # sustained mode) never resends a prompt the server may still hold in a slot's cache.
        self.prompts_made = 0

    @property
    def endpoint(self) -> Endpoint:
        base = self.server.base_url if self.server is not None else self.url
        return Endpoint(base, self.api_key)

    def _start(self, cell: Cell) -> None:
        binary = llama_server_path()
        if binary is None:
            raise BenchError(missing_server_reason())
        self._stop()
        self.server = LlamaServer(binary, server_settings(self.model_path, cell), START_TIMEOUT_S)

    def _stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def _describe(self) -> dict[str, Any]:
        """The row's description of the server (its URL is the cell's server_url: blank for the embedded one)."""
        models = served_models(self.endpoint)
        name, version = server_identity(self.endpoint)
        return {
            "served_by": name if self.url else "llama-server",
            "server_version": f"{name} {version}" if version else "",
            "server_models": ";".join(models),
            "_model": self.model_name or (models[0] if models else ""),
        }

    def load(self) -> LoadInfo:
        started = time.perf_counter()
        if not self.url:
            self._start(self.load_cell)
        self.described = self._describe()
        extra = {k: v for k, v in self.described.items() if not k.startswith("_")}
        if not self.url and self.model_path.is_file():
            from bench.models import gguf_metadata

            extra.update(gguf_metadata(self.model_path))
            return LoadInfo(
                time.perf_counter() - started,
                n_params=served_parameters(self.endpoint),
                model_file_bytes=self.model_path.stat().st_size,
                extra=extra,
            )
        return LoadInfo(time.perf_counter() - started, n_params=served_parameters(self.endpoint), extra=extra)

    def start_context(self, cell: Cell) -> dict[str, Any]:
        if not self.url:
            wanted = server_settings(self.model_path, cell)
            if self.server is None or self.server.exited() is not None or self.server.settings != wanted:
                self._start(cell)  # a fresh server: other settings, or the previous one died
                self.described = self._describe()
            assert self.server is not None
            return {"n_ctx": self.server.settings.context, "threads_used": self.server.settings.threads}
        return {}

    def measure(self, cell: Cell, energy: EnergyMeter | None = None) -> dict[str, Any]:
        if cell.depth:
            raise BenchError(
                f"workload depth {cell.depth}: the server backend measures fresh requests only (depth 0); "
                "exclude depths > 0 for backend server (exclude: [{backend: server, depth: [...]}])"
            )
        profile = profile_of(str(cell.setting("load") or ""))
        if profile.kind:  # a load profile: one load point (bench.runners.server.served)
            model_path = self.model_path if self.model_path.is_file() else None
            target = Target(self.endpoint, self.described.get("_model", ""), cell, model_path)
            fields = self.served.measure(target, profile)
            if self.server is not None and self.server.exited() is not None:
                raise self.server.failure("died during the load point")
            return fields
        chat = cell.setting("endpoint") == "chat"
        ignore_eos = bool(cell.setting("ignore_eos"))
        users = cell.setting("parallel")
        shared = int(cell.setting("shared_prefix_tokens"))
        if shared >= cell.prompt_tokens:
            raise BenchError(
                f"shared_prefix_tokens {shared} must be less than prompt_tokens {cell.prompt_tokens} "
                "(the prefix is part of each prompt, which needs tokens of its own)"
            )
        counter = TokenCounter(self.endpoint, self.model_path if self.model_path.is_file() else None)
        maker = PromptMaker(counter, chat, seed=zlib.crc32(cell.cell_id.encode()), shared_prefix_tokens=shared)
        requests = cell.warmup + cell.repetitions
        try:
            prompts = {
                (u, i): maker.prompt(self.prompts_made + u * requests + i, cell.prompt_tokens)
                for u in range(users)
                for i in range(requests)
            }
        finally:
            maker.close()
        self.prompts_made += users * requests
        loop = ClosedLoop(users, cell.warmup, cell.repetitions, float(cell.setting("request_timeout_s")))
        if energy is not None:
            energy.mark()
        records = asyncio.run(self._run(loop, cell, prompts, chat, ignore_eos))
        grace_s = EXIT_GRACE_S if any(not r.ok for r in records) else 0.0  # did failed requests mean a dead server?
        if self.server is not None and self.server.exited(grace_s) is not None:
            failed = sum(not r.ok for r in records)
            raise self.server.failure(f"died during the cell ({failed} requests failed)")
        measured = [r for r in records if not r.warmup]
        if measured and not any(r.ok for r in measured):
            raise BenchError(f"every request failed; first: {measured[0].error}")
        fields = request_fields(records, users, cell.prompt_tokens, cell.gen_tokens, ignore_eos)
        fields["warnings"] = "; ".join(w for w in (*dict.fromkeys(maker.warnings), fields["warnings"]) if w)
        if energy is not None:
            joules = energy.energy_j_since_mark()
            tokens = sum(r.output_tokens for r in records if r.ok)
            fields["energy_j_per_decode_token"] = joules / tokens if joules is not None and tokens else None
        return fields

    async def _run(
        self, loop: ClosedLoop, cell: Cell, prompts: dict[tuple[int, int], str], chat: bool, ignore_eos: bool
    ) -> list[RequestRecord]:
        endpoint = self.endpoint
        path = PATHS["chat" if chat else "completions"]
        turns = int(cell.setting("turns"))
        conversations: dict[int, tuple[Turn, ...]] = {}  # each user's conversation so far
        async with endpoint.client(loop.users) as client:

            async def send(user: int, index: int, warmup: bool) -> RequestRecord:
                history = conversations.get(user, ()) if index % turns else ()
                prompt = prompts[(user, index)]
                body = request_body(
                    chat, self.described.get("_model", ""), prompt, cell.gen_tokens, ignore_eos, index, history
                )
                record = RequestRecord(user, index, warmup, cell.prompt_tokens)
                record = await stream_request(client, endpoint, path, body, record, loop.request_timeout_s)
                # A failed turn ends its conversation: the next request starts a new one.
                conversations[user] = (*history, Turn(prompt, record.answer_text)) if record.ok else ()
                return record

            return await loop.run(send)

    def sustain_chunks(self, cell: Cell) -> Iterator[tuple[int, float]] | None:
        """The sustained mode (bench.runners.sustain) for a closed-loop cell: its users keep sending requests of
        the cell's shape, a round at a time (one request per user, sent together); each chunk is a round's output
        tokens and wall seconds. Prompts stay distinct from every measured one, so the prompt cache gives nothing.
        A load-profile cell has no sustained mode (its load point is bounded by its own duration)."""
        if profile_of(str(cell.setting("load") or "")).kind:
            return None
        return self._sustain_rounds(cell)

    def _sustain_rounds(self, cell: Cell) -> Iterator[tuple[int, float]]:
        chat = cell.setting("endpoint") == "chat"
        ignore_eos = bool(cell.setting("ignore_eos"))
        users = cell.setting("parallel")
        counter = TokenCounter(self.endpoint, self.model_path if self.model_path.is_file() else None)
        seed = zlib.crc32(f"sustain {cell.cell_id}".encode())
        maker = PromptMaker(counter, chat, seed=seed, shared_prefix_tokens=int(cell.setting("shared_prefix_tokens")))
        loop = ClosedLoop(users, 0, 1, float(cell.setting("request_timeout_s")))
        try:
            while True:
                prompts = {(u, 0): maker.prompt(self.prompts_made + u, cell.prompt_tokens) for u in range(users)}
                self.prompts_made += users
                records = asyncio.run(self._run(loop, cell, prompts, chat, ignore_eos))
                ok = [r for r in records if r.ok]
                grace_s = EXIT_GRACE_S if len(ok) < len(records) else 0.0
                if self.server is not None and self.server.exited(grace_s) is not None:
                    raise self.server.failure("died during the sustained mode")
                if not ok:
                    raise BenchError(f"sustained mode: every request of a round failed; first: {records[0].error}")
                yield sum(r.output_tokens for r in ok), max(r.end_s for r in ok) - min(r.sent_s for r in ok)
        finally:
            maker.close()

    def close(self) -> None:
        self._stop()

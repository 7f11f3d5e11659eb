"""HTTP to the measured server: one streamed request into a RequestRecord, and the server's descriptive endpoints.

Traffic goes only to the configured base URL. The API key travels in one header and is scrubbed from every error
text this module produces (a server may echo a request back).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from bench.errors import BenchError
from bench.runners.server.stream import RequestRecord, StreamReader

ERROR_BODY_SHOWN = 300  # characters of an error response's body kept in the record
DESCRIBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Endpoint:
    """Where requests go: the OpenAI-compatible base URL (ending in /v1) and the credentials, never printed."""

    base_url: str
    api_key: str = ""

    @property
    def root(self) -> str:
        """The server's root (llama-server's /health, /props, /tokenize live there, beside /v1)."""
        return self.base_url.removesuffix("/").removesuffix("/v1")

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def scrub(self, text: str) -> str:
        return text.replace(self.api_key, "<api key>") if self.api_key else text

    def client(self, connections: int) -> httpx2.AsyncClient:
        # trust_env=False: no proxy from the environment; requests go to the configured URL only.
        limits = httpx2.Limits(max_connections=connections + 2, max_keepalive_connections=connections + 2)
        return httpx2.AsyncClient(headers=self.headers(), limits=limits, trust_env=False, timeout=None)


def _error_text(exc: BaseException) -> str:
    kind = type(exc).__name__
    return f"{kind}: {exc}" if str(exc) else kind


async def stream_request(
    client: httpx2.AsyncClient,
    endpoint: Endpoint,
    path: str,
    body: dict[str, Any],
    record: RequestRecord,
    timeout_s: float,
) -> RequestRecord:
    """POST `body` (stream: true) to base_url + path and read the stream into `record`; every failure (refused
    connection, HTTP status, malformed line, timeout) ends up in record.error, never raised."""
    reader = StreamReader(record)
    record.sent_s = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", endpoint.base_url.rstrip("/") + path, json=body) as response:
                record.status = response.status_code
                if response.status_code >= 400:
                    text = (await response.aread()).decode("utf-8", "replace")
                    record.error = f"HTTP {response.status_code}: {text[:ERROR_BODY_SHOWN]}"
                else:
                    async for line in response.aiter_lines():
                        reader.feed(line, time.perf_counter())
                        if reader.done:
                            break
                    if not reader.done and not record.finish_reason:
                        record.error = "the stream ended without a finish reason or [DONE]"
    except TimeoutError:
        record.error = f"timed out after {timeout_s:g} s (request_timeout_s) with {len(record.pieces)} tokens received"
    except BenchError as exc:
        record.error = exc.message
    except httpx2.HTTPError as exc:
        record.error = _error_text(exc)
    record.end_s = time.perf_counter()
    record.error = endpoint.scrub(record.error)
    return record


def get_json(endpoint: Endpoint, path: str, from_root: bool = False) -> Any:
    """GET a descriptive endpoint (/v1/models, /props, /version): its JSON, or None when the server has none."""
    url = (endpoint.root if from_root else endpoint.base_url.rstrip("/")) + path
    try:
        with httpx2.Client(headers=endpoint.headers(), trust_env=False, timeout=DESCRIBE_TIMEOUT_S) as client:
            response = client.get(url)
    except httpx2.ConnectError as exc:
        raise BenchError(endpoint.scrub(f"cannot connect to the server at {url}: {exc} (is it running?)")) from None
    except httpx2.HTTPError as exc:
        raise BenchError(endpoint.scrub(f"server at {url}: {_error_text(exc)}")) from None
    if response.status_code >= 400:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def describe_client(endpoint: Endpoint) -> httpx2.Client:
    """A client for many small requests (tokenizing every prompt) on one kept-alive connection."""
    return httpx2.Client(headers=endpoint.headers(), trust_env=False, timeout=DESCRIBE_TIMEOUT_S)


def post_json(endpoint: Endpoint, path: str, body: dict[str, Any], client: httpx2.Client | None = None) -> Any:
    """POST to a root endpoint (/tokenize, /apply-template): its JSON, or None when the server has none."""
    try:
        if client is not None:
            response = client.post(endpoint.root + path, json=body)
        else:
            with describe_client(endpoint) as own:
                response = own.post(endpoint.root + path, json=body)
    except httpx2.HTTPError as exc:
        raise BenchError(endpoint.scrub(f"server at {endpoint.root + path}: {_error_text(exc)}")) from None
    if response.status_code >= 400:
        return None
    return response.json()


# A server's version endpoint (beside /v1 at its root), the JSON key holding the version, and whose it is.
VERSION_ENDPOINTS = (
    ("/props", "build_info", "llama-server"),
    ("/version", "version", "vLLM"),
    ("/api/version", "version", "Ollama"),
)


def server_identity(endpoint: Endpoint) -> tuple[str, str]:
    """(name, version) as the server says them: llama-server's /props, vLLM's /version, Ollama's /api/version;
    a server with none of them is named by its host and port, with no version."""
    for path, key, name in VERSION_ENDPOINTS:
        found = get_json(endpoint, path, from_root=True)
        if isinstance(found, dict) and found.get(key):
            return name, str(found[key])
    return urlsplit(endpoint.base_url).netloc, ""


def served_models(endpoint: Endpoint) -> list[str]:
    listing = get_json(endpoint, "/models")
    if not isinstance(listing, dict):
        return []
    return [str(m.get("id")) for m in listing.get("data") or [] if isinstance(m, dict) and m.get("id")]


def served_parameters(endpoint: Endpoint) -> int | None:
    """The parameter count a server states for its first model (llama-server's /v1/models `meta.n_params`)."""
    listing = get_json(endpoint, "/models")
    models = listing.get("data") if isinstance(listing, dict) else None
    meta = models[0].get("meta") if models and isinstance(models[0], dict) else None
    return int(meta["n_params"]) if isinstance(meta, dict) and meta.get("n_params") else None

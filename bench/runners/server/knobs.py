"""The server backend's own knobs and its suite block (registered for this backend only by bench.runners.registry).

A suite points the backend at a server it did not start with its block, `server: {url: ..., model: NAME,
api_key_env: VAR}`; without one, bench starts llama-server itself for each load group. The block's fields set the
knobs server_url, server_model and server_api_key_env of the backend's cells (said in the block only: the cells
carry them to the worker and into their rows).
"""

from __future__ import annotations

from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from bench.suite.blocks import SECRET_INPUT, SuiteBlock
from bench.suite.knobs import Knob


class ServerBlock(BaseModel):
    """`server:` in a suite: an OpenAI-compatible server bench does not start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1)  # the base URL, e.g. http://127.0.0.1:8080/v1
    model: str = ""  # the model name requests ask for; empty: the first of its /v1/models
    api_key_env: str = ""  # the environment variable holding its API key (the key is never written anywhere)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("expected an http(s) base URL such as http://127.0.0.1:8080/v1")
        if parsed.username or parsed.password:
            # Its own type: the loader does not echo the input (the password) back.
            raise PydanticCustomError(
                SECRET_INPUT, "credentials do not belong in the URL: put the key in a variable named by api_key_env"
            )
        return url


BLOCK = SuiteBlock(ServerBlock, {"url": "server_url", "model": "server_model", "api_key_env": "server_api_key_env"})

ENDPOINTS = ("chat", "completions")  # /v1/chat/completions (the model's chat template) or /v1/completions (raw)

KNOBS: tuple[Knob, ...] = (
    Knob(
        "server_url",
        str,
        "",
        "set by the suite's `server: {url: ...}`: the OpenAI-compatible base URL measured; empty: bench starts "
        "llama-server",
        "server URL",
        "url",
        reload=True,
    ),
    Knob(
        "server_model",
        str,
        "",
        "set by `server: {model: ...}`: the model name requests ask for (empty: the first of /v1/models)",
        "server model",
        "sm",
        reload=True,
    ),
    Knob(
        "server_api_key_env",
        str,
        "",
        "set by `server: {api_key_env: ...}`: the variable holding the server's API key (never written anywhere)",
        "API key variable",
        "key",
        reload=True,
    ),
    Knob(
        "endpoint",
        str,
        "chat",
        "chat: /v1/chat/completions with the model's template; completions: /v1/completions, raw text",
        "endpoint",
        "ep",
        allowed=ENDPOINTS,
    ),
    Knob(
        "ignore_eos",
        bool,
        True,
        "hold every answer to gen_tokens (ignore_eos, min_tokens); false: the model may stop early, and an answer "
        "cut at gen_tokens counts as truncated",
        "ignore EOS",
        "ieos",
    ),
    Knob(
        "request_timeout_s",
        int,
        300,
        "seconds one request may take, stream included, before it is recorded as timed out",
        "request timeout (s)",
        "rto",
        minimum=1,
    ),
    Knob(
        "shared_prefix_tokens",
        int,
        0,
        "tokens every request's prompt begins with, the same across the cell's requests (within prompt_tokens): "
        "what a prompt cache can reuse; 0: every prompt distinct from its first token",
        "shared prefix (tok)",
        "spx",
        minimum=0,
    ),
    Knob(
        "turns",
        int,
        1,
        "requests per conversation: each user's next request resends the conversation so far (its prompts and "
        "the answers) plus prompt_tokens new tokens, as a chat client does; 1: every request a new conversation",
        "turns",
        "turns",
        minimum=1,
    ),
)

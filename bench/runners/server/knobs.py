"""The server backend's own knobs (registered for this backend only by bench.runners.registry).

A suite points the backend at a server it did not start with `server_url` (with `server_model` and
`server_api_key_env`); left empty, bench starts llama-server itself for each load group.
"""

from __future__ import annotations

from bench.suite.knobs import Knob

ENDPOINTS = ("chat", "completions")  # /v1/chat/completions (the model's chat template) or /v1/completions (raw)

KNOBS: tuple[Knob, ...] = (
    Knob(
        "server_url",
        str,
        "",
        "an OpenAI-compatible base URL to measure (e.g. http://127.0.0.1:8080/v1); empty: bench starts llama-server",
        "server URL",
        "url",
        reload=True,
    ),
    Knob(
        "server_model",
        str,
        "",
        "the model name requests ask a server_url for (empty: the first of its /v1/models)",
        "server model",
        "sm",
        reload=True,
    ),
    Knob(
        "server_api_key_env",
        str,
        "",
        "the environment variable holding server_url's API key (the key itself is never written anywhere)",
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
)

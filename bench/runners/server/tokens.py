"""Counting a prompt's tokens as the server will: its own /tokenize (after /apply-template for chat), else the
model's tokenizer read from its GGUF by llama-cpp-python (`vocab_only`: the vocabulary and chat template, no
weights), with the GGUF's chat template applied for chat; else nothing (prompts of about the right length)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from bench.runners.server.client import Endpoint, describe_client, post_json

SERVER = "the server's /tokenize"
GGUF = "the model's tokenizer from its GGUF (the server has no /tokenize)"


class GgufTokenizer:
    """The GGUF's vocabulary (and chat template) through llama-cpp-python, loaded without the weights."""

    def __init__(self, path: Path) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = Llama(str(path), vocab_only=True, verbose=False)
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            bos, eos = (self._llama.detokenize([t]).decode("utf-8", "replace") for t in self._ends())
            self._formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)

    def _ends(self) -> tuple[int, int]:
        return self._llama.token_bos(), self._llama.token_eos()

    def count(self, text: str, chat: bool) -> int | None:
        """Tokens of `text` as a user message (chat: None without a chat template) or as raw text."""
        if chat:
            if self._formatter is None:
                return None
            text = self._formatter(messages=[{"role": "user", "content": text}]).prompt
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def gguf_tokenizer(path: Path | None) -> GgufTokenizer | None:
    """The model's tokenizer when its GGUF is here and llama-cpp-python is installed, else None."""
    if path is None or not path.is_file() or importlib.util.find_spec("llama_cpp") is None:
        return None
    return GgufTokenizer(path)


@dataclass
class TokenCounter:
    """Counts with the server while it can, then with the GGUF's tokenizer; `source` says which counted last
    (None: neither can)."""

    endpoint: Endpoint
    model_path: Path | None = None
    source: str | None = SERVER
    _client: httpx2.Client | None = None
    _local: Any = field(default=None, repr=False)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _server(self, text: str, chat: bool) -> int | None:
        if self._client is None:
            self._client = describe_client(self.endpoint)
        content = text
        if chat:
            applied = post_json(
                self.endpoint, "/apply-template", {"messages": [{"role": "user", "content": text}]}, self._client
            )
            if not isinstance(applied, dict) or "prompt" not in applied:
                return None
            content = applied["prompt"]
        body = {"content": content, "add_special": True, "parse_special": True}
        tokens = post_json(self.endpoint, "/tokenize", body, self._client)
        if not isinstance(tokens, dict) or not isinstance(tokens.get("tokens"), list):
            return None
        return len(tokens["tokens"])

    def count(self, text: str, chat: bool) -> int | None:
        """Tokens the server sees for this text (chat: as a user message, its template included), or None."""
        if self.source == SERVER:
            counted = self._server(text, chat)
            if counted is not None:
                return counted
            self._local = gguf_tokenizer(self.model_path)
            self.source = GGUF if self._local is not None else None
        if self.source == GGUF:
            counted = self._local.count(text, chat)
            if counted is not None:
                return counted
            self.source = None
        return None

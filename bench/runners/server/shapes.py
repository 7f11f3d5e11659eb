"""Requests of exact lengths: prompts of `prompt_tokens` tokens in the server's own tokens, distinct per request.

Each prompt starts with its own request number and continues with words drawn (seeded) from bench's evaluation
text, so no two requests share a prefix a prompt cache could reuse. Its length is counted with the server's
/tokenize (after /apply-template for chat, so the template's tokens count too) and cut or grown to the target;
a server without /tokenize gets prompts of about the right length and a row warning says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import httpx2
import numpy as np

from bench.runners.server.client import Endpoint, describe_client, post_json

FIT_ROUNDS = 16  # bisection steps over the words (2^16 words: more than any prompt), pad steps past the target
WORDS_PER_TOKEN = 0.75  # English words per token, for the first guess and servers without /tokenize
PAD = " ."  # one token in the tokenizers we know: fills a prompt to its exact length


def _words() -> list[str]:
    text = resources.files("bench").joinpath("data/eval_text.txt").read_text(encoding="utf-8")
    return text.split()


@dataclass
class PromptMaker:
    """Builds exact-length prompts for one server; `warnings` says where it could not hold a length."""

    endpoint: Endpoint
    chat: bool
    seed: int
    warnings: list[str] = field(default_factory=list)
    _vocabulary: list[str] = field(default_factory=_words)
    _counts: bool = True
    _client: httpx2.Client | None = None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def _count(self, text: str) -> int | None:
        """Tokens the server sees for this user text (its chat template included), None without /tokenize."""
        content = text
        if self._client is None:
            self._client = describe_client(self.endpoint)
        if self.chat:
            applied = post_json(
                self.endpoint, "/apply-template", {"messages": [{"role": "user", "content": text}]}, self._client
            )
            if not isinstance(applied, dict) or "prompt" not in applied:
                return None
            content = applied["prompt"]
        tokens = post_json(
            self.endpoint, "/tokenize", {"content": content, "add_special": True, "parse_special": True}, self._client
        )
        if not isinstance(tokens, dict) or not isinstance(tokens.get("tokens"), list):
            return None
        return len(tokens["tokens"])

    def prompt(self, number: int, prompt_tokens: int) -> str:
        rng = np.random.default_rng([self.seed, number])
        words = [f"Request {number}:"] + [str(w) for w in rng.choice(self._vocabulary, size=4 * prompt_tokens + 8)]
        if not self._counts:
            return " ".join(words[: max(1, int(prompt_tokens * WORDS_PER_TOKEN))])
        # The most whole words that stay within the target (bisection: the count grows with the words; a word may
        # be several tokens), then one-token pads up to it exactly.
        low, high, best = 1, len(words), (1, 0)
        for _ in range(FIT_ROUNDS):
            if low > high:
                break
            middle = (low + high) // 2
            counted = self._count(" ".join(words[:middle]))
            if counted is None:
                self._counts = False
                self.warnings.append("prompt lengths not verified: the server has no /tokenize (about right by words)")
                return " ".join(words[: max(1, int(prompt_tokens * WORDS_PER_TOKEN))])
            if counted <= prompt_tokens:
                best, low = (middle, counted), middle + 1
            else:
                high = middle - 1
        n_words, counted = best
        text = " ".join(words[:n_words])
        counted = counted or self._count(text) or 0  # even one word is over: the template alone may be
        for _ in range(max(0, prompt_tokens - counted) + FIT_ROUNDS):
            if counted >= prompt_tokens:
                break
            padded = text + PAD
            counted, text = self._count(padded) or counted + 1, padded
        if counted != prompt_tokens:
            self.warnings.append(
                f"a prompt of {prompt_tokens} tokens has {counted} (the chat template's own tokens, or a word that would not split)"
            )
        return text


def request_body(chat: bool, model: str, prompt: str, gen_tokens: int, ignore_eos: bool, seed: int) -> dict[str, Any]:
    """The JSON of one streamed request. ignore_eos/min_tokens hold the output to gen_tokens where a server takes
    them (llama-server, vLLM); `usage` in the stream gives the server's own token counts."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": gen_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "seed": seed,
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = gen_tokens
    return body

"""Requests of exact lengths: prompts of `prompt_tokens` tokens in the server's own tokens, distinct per request.

Each prompt starts with its own request number and continues with words drawn (seeded) from bench's evaluation
text, so no two requests share a prefix a prompt cache could reuse, unless the cell asks for one: then every
prompt begins with the same `shared_prefix_tokens` tokens (the prefix's own words, the same for every request of
the cell) and its distinct part follows. Lengths are counted as the server counts them (bench.runners.server.tokens:
its /tokenize, else the model's tokenizer from its GGUF) and cut or grown to the target; where neither can count,
prompts have about the right length and a row warning says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from bench.runners.server.tokens import GGUF, TokenCounter

FIT_ROUNDS = 16  # bisection steps over the words (2^16 words: more than any prompt), pad steps past the target
WORDS_PER_TOKEN = 0.75  # English words per token, for the first guess and servers without /tokenize
PAD = " ."  # one token in the tokenizers we know: fills a prompt to its exact length


def _words() -> list[str]:
    text = resources.files("bench").joinpath("data/eval_text.txt").read_text(encoding="utf-8")
    return text.split()


@dataclass
class PromptMaker:
    """Builds exact-length prompts for one server; `warnings` says where it could not hold a length."""

    counter: TokenCounter
    chat: bool
    seed: int
    shared_prefix_tokens: int = 0
    warnings: list[str] = field(default_factory=list)
    _vocabulary: list[str] = field(default_factory=_words)
    _prefix: str | None = None

    def close(self) -> None:
        self.counter.close()

    def _warn(self, warning: str) -> None:
        if warning not in self.warnings:
            self.warnings.append(warning)

    def _count(self, text: str, chat: bool) -> int | None:
        counted = self.counter.count(text, chat)
        if counted is None:
            self._warn("prompt lengths not verified: neither the server (/tokenize) nor the model's GGUF can count")
        elif self.counter.source == GGUF:
            self._warn(f"prompt lengths counted with {GGUF}")
        return counted

    def _fit(self, head: str, head_tokens: int, words: list[str], tokens: int, chat: bool) -> str:
        """`head` (of `head_tokens` tokens) followed by as many of `words` as keep it within `tokens`, then one-token
        pads up to it exactly."""

        def joined(n: int) -> str:
            return " ".join([head, *words[:n]]) if head else " ".join(words[:n])

        # The most words that stay within the target (bisection: the count grows with the words; a word may be
        # several tokens), then pads.
        low, high, best = 1, len(words), (1, 0)
        for _ in range(FIT_ROUNDS):
            if low > high:
                break
            middle = (low + high) // 2
            counted = self._count(joined(middle), chat)
            if counted is None:
                return joined(max(1, int((tokens - head_tokens) * WORDS_PER_TOKEN)))
            if counted <= tokens:
                best, low = (middle, counted), middle + 1
            else:
                high = middle - 1
        n_words, counted = best
        text = joined(n_words)
        counted = counted or self._count(text, chat) or 0  # even one word is over: the template alone may be
        for _ in range(max(0, tokens - counted) + FIT_ROUNDS):
            if counted >= tokens:
                break
            padded = text + PAD
            counted, text = self._count(padded, chat) or counted + 1, padded
        if counted != tokens:
            self._warn(
                f"a prompt of {tokens} tokens has {counted} (the chat template's own tokens, or a word that would not split)"
            )
        return text

    def prefix(self) -> str:
        """The cell's shared prefix: `shared_prefix_tokens` tokens of raw text ('' without one)."""
        if self._prefix is None:
            self._prefix = ""
            if self.shared_prefix_tokens:
                rng = np.random.default_rng([self.seed, 2**31])  # apart from every request's own stream
                words = [str(w) for w in rng.choice(self._vocabulary, size=4 * self.shared_prefix_tokens + 8)]
                self._prefix = self._fit("", 0, words, self.shared_prefix_tokens, chat=False)
        return self._prefix

    def prompt(self, number: int, prompt_tokens: int) -> str:
        rng = np.random.default_rng([self.seed, number])
        own = [f"Request {number}:"] + [str(w) for w in rng.choice(self._vocabulary, size=4 * prompt_tokens + 8)]
        return self._fit(self.prefix(), self.shared_prefix_tokens, own, prompt_tokens, self.chat)


@dataclass(frozen=True)
class Turn:
    """One earlier exchange of a conversation, resent with the next request."""

    prompt: str
    answer: str


def request_body(
    chat: bool,
    model: str,
    prompt: str,
    gen_tokens: int,
    ignore_eos: bool,
    seed: int,
    history: tuple[Turn, ...] = (),
) -> dict[str, Any]:
    """The JSON of one streamed request: `history` (the conversation so far) before the prompt. ignore_eos and
    min_tokens hold the output to gen_tokens where a server takes them (llama-server, vLLM); `usage` in the stream
    gives the server's own token counts."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": gen_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.0,
        "seed": seed,
    }
    if chat:
        body["messages"] = [
            *(
                {"role": role, "content": text}
                for t in history
                for role, text in (("user", t.prompt), ("assistant", t.answer))
            ),
            {"role": "user", "content": prompt},
        ]
    else:
        body["prompt"] = "\n\n".join([*(t.prompt + t.answer for t in history), prompt])
    if ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = gen_tokens
    return body

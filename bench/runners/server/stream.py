"""One streamed response read into a request record: the SSE lines as they arrive (pure: no network here).

Every time comes from one monotonic clock (time.perf_counter) taken by the caller when a line arrived. A token
is a streamed piece of text: `reasoning_content` (a server that splits reasoning out), or `content` / `text`
(raw text, where a model's reasoning ends at `</think>`). The server's `usage` counts replace bench's counts
when it sends them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.errors import BenchError

THINK_END = "</think>"
SSE_FIELDS = ("event:", "id:", "retry:", ":")  # lines a stream may carry besides `data:` (ignored)
LINE_SHOWN = 80  # characters of an offending line an error quotes


@dataclass
class Piece:
    """One streamed token: when it arrived, its text, and whether the server marked it as reasoning."""

    at_s: float
    text: str
    reasoning: bool


@dataclass
class RequestRecord:
    """One request, as the client saw it (seconds on the monotonic clock) and as the server accounted it."""

    user: int
    index: int  # the user's n-th request (warm-ups first)
    warmup: bool
    prompt_tokens: int
    sent_s: float = 0.0
    end_s: float = 0.0
    pieces: list[Piece] = field(default_factory=list)
    finish_reason: str = ""
    status: int | None = None  # HTTP status (None: no response)
    error: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    server_timings: dict[str, float] = field(default_factory=dict)  # llama-server's own per-request timings

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def ttft_s(self) -> float | None:
        """Time to the first token of any kind (reasoning included)."""
        return self.pieces[0].at_s - self.sent_s if self.pieces else None

    def _answer_start(self) -> int:
        """Index of the first answer piece: after the last reasoning piece and after `</think>` in raw text."""
        start = 0
        for position, piece in enumerate(self.pieces):
            if piece.reasoning:
                start = position + 1
            elif THINK_END in piece.text:
                after = piece.text.rsplit(THINK_END, 1)[1]
                start = position if after.strip() else position + 1
        while start < len(self.pieces) and not self.pieces[start].text.strip():
            start += 1  # the blank line a model writes after its reasoning is not yet the answer
        return start

    @property
    def answer_text(self) -> str:
        """What the server sent as the answer's text (`content` / `text`; reasoning split out is left out)."""
        return "".join(piece.text for piece in self.pieces if not piece.reasoning)

    @property
    def answer_ttft_s(self) -> float | None:
        """Time to the first answer token (after any reasoning)."""
        start = self._answer_start()
        return self.pieces[start].at_s - self.sent_s if start < len(self.pieces) else None

    @property
    def output_tokens(self) -> int:
        return int(self.usage.get("completion_tokens") or len(self.pieces))

    @property
    def reasoning_tokens(self) -> int:
        details = self.usage.get("completion_tokens_details") or {}
        if details.get("reasoning_tokens") is not None:
            return int(details["reasoning_tokens"])
        counted = min(self._answer_start(), len(self.pieces))
        return (
            counted
            if self.output_tokens == len(self.pieces)
            else round(counted * self.output_tokens / max(1, len(self.pieces)))
        )

    @property
    def answer_tokens(self) -> int:
        return self.output_tokens - self.reasoning_tokens

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.sent_s

    @property
    def gaps_s(self) -> list[float]:
        """Every inter-token gap of the stream."""
        return [b.at_s - a.at_s for a, b in zip(self.pieces, self.pieces[1:], strict=False)]

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (last token - first token) / (tokens - 1)."""
        if len(self.pieces) < 2:
            return None
        return (self.pieces[-1].at_s - self.pieces[0].at_s) / (self.output_tokens - 1)


def _shown(line: str) -> str:
    return line if len(line) <= LINE_SHOWN else line[:LINE_SHOWN] + "…"


class StreamReader:
    """Feeds SSE lines into a RequestRecord; raises BenchError naming the offending line on a malformed one."""

    def __init__(self, record: RequestRecord) -> None:
        self.record = record
        self.line_number = 0
        self.done = False

    def feed(self, line: str, at_s: float) -> None:
        self.line_number += 1
        line = line.rstrip("\r")
        if not line or line.startswith(SSE_FIELDS):
            return
        if not line.startswith("data:"):
            raise BenchError(f"malformed SSE line {self.line_number}: {_shown(line)!r} (expected 'data: ...')")
        payload = line.removeprefix("data:").strip()
        if payload == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            raise BenchError(f"malformed SSE line {self.line_number}: {_shown(line)!r} (not JSON)") from None
        if not isinstance(chunk, dict):
            raise BenchError(f"malformed SSE line {self.line_number}: {_shown(line)!r} (not a JSON object)")
        self._take(chunk, at_s)

    def _take(self, chunk: dict[str, Any], at_s: float) -> None:
        if chunk.get("error"):
            error = chunk["error"]
            raise BenchError(
                f"server error in the stream: {_shown(json.dumps(error) if not isinstance(error, str) else error)}"
            )
        if isinstance(chunk.get("usage"), dict):
            self.record.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.record.server_timings = {
                k: float(v) for k, v in chunk["timings"].items() if isinstance(v, int | float)
            }
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                self.record.pieces.append(Piece(at_s, str(reasoning), True))
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if text:
                self.record.pieces.append(Piece(at_s, str(text), False))
            if choice.get("finish_reason"):
                self.record.finish_reason = str(choice["finish_reason"])

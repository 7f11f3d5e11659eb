"""A fake OpenAI-compatible streaming server on 127.0.0.1, in a thread: the shapes of reply (reasoning split out,
<think> in the text), the faults (HTTP errors, a hung stream, a malformed line) the server backend must read, and
a TTFT that grows with load by a known law (for the capacity search)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_S = 20.0  # a hung stream's silence: longer than the tests' request timeout, bounded so threads end


@dataclass
class Behaviour:
    """What the fake does; tests change it between runs."""

    first_token_s: float = 0.05  # before the first token
    gap_s: float = 0.01  # between tokens
    reasoning: int = 3  # tokens sent as reasoning_content (mode "split") or inside <think> (mode "think")
    answer: int = 4
    mode: str = "split"  # split | think | hang | malformed
    finish: str = "length"
    fail_every: int = 0  # every n-th completion request gets `fail_status`
    fail_status: int = 503
    tokenize: bool = True  # offers llama-server's /tokenize and /apply-template (False: a plain OpenAI server)
    # A TTFT that is a known function of load (0: off): a completion request's first token waits first_token_s
    # plus this per earlier request of its load point that arrived within recent_window_s before it. A window of
    # arrivals, not of requests in flight, so the law does not depend on how long the replies take.
    ttft_per_recent_s: float = 0.0
    recent_window_s: float = 0.25
    arrivals: dict[int, float] = field(default_factory=dict)  # request number -> arrival (time.monotonic)
    ended: set[int] = field(default_factory=set)  # requests answered: their arrivals go when the next point begins
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # every completion request's JSON, as received
    requests: int = 0
    prompts: list[str] = field(default_factory=list)  # every completion request's prompt (the user message)


def _chunk(delta: dict[str, Any] | None, text: str | None = None, finish: str | None = None) -> bytes:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
    if delta is not None:
        choice["delta"] = delta
    else:
        choice["text"] = text or ""
    return f"data: {json.dumps({'choices': [choice]})}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.behaviour.seen_headers.append(dict(self.headers))
        if self.path == "/v1/models":
            self._json(200, {"data": [{"id": "fake-model"}]})
        elif self.path == "/version":
            self._json(200, {"version": "fake 1.0"})
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        b = self.behaviour
        b.seen_headers.append(dict(self.headers))
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path in ("/tokenize", "/apply-template") and not b.tokenize:
            self._json(404, {"error": "not found"})
            return
        if self.path == "/tokenize":  # one token per whitespace-separated word
            self._json(200, {"tokens": list(range(len(str(request.get("content", "")).split())))})
            return
        if self.path == "/apply-template":
            self._json(200, {"prompt": "<user> " + request["messages"][0]["content"]})
            return
        with self.lock:
            b.requests += 1
            number = b.requests
            recent = self._arrive(b, number, request.get("seed"))
            b.bodies.append(request)
            b.prompts.append(
                str(request["messages"][-1]["content"] if "messages" in request else request.get("prompt"))
            )
        if b.fail_every and number % b.fail_every == 0:
            # Echoes the request's credentials, as a careless server may: bench must scrub them from what it writes.
            echo = self.headers.get("Authorization", "")
            self._json(b.fail_status, {"error": {"message": f"fake {b.fail_status}", "echo": echo}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self._stream(b, chat="messages" in request, first_token_s=b.first_token_s + b.ttft_per_recent_s * recent)
        finally:
            with self.lock:
                b.ended.add(number)

    @staticmethod
    def _arrive(b: Behaviour, number: int, seed: Any) -> int:
        """Records a completion request's arrival (under the lock); returns how many earlier requests of its
        load point arrived within the window before it."""
        now = time.monotonic()
        if seed == 0:  # bench numbers each load point's requests from 0 (the body's seed): a new point begins,
            for old in b.ended:  # and the earlier points' requests, all answered by then, stop counting
                b.arrivals.pop(old, None)
            b.ended.clear()
        recent = sum(now - t < b.recent_window_s for t in b.arrivals.values())
        b.arrivals[number] = now
        return recent

    def _send(self, data: bytes, wait_s: float) -> None:
        time.sleep(wait_s)
        self.wfile.write(data)
        self.wfile.flush()

    def _stream(self, b: Behaviour, chat: bool, first_token_s: float) -> None:
        def piece(text: str, reasoning: bool = False) -> bytes:
            if not chat:
                return _chunk(None, text)
            return _chunk({"reasoning_content": text} if reasoning else {"content": text})

        wait = first_token_s
        if b.mode == "malformed":
            self._send(piece("ok"), wait)
            self._send(
                b'data: {"choices": [ this is not json at all, and it goes on and on and on for a while]}\n\n', 0
            )
            return
        if b.mode == "hang":
            self._send(piece("ok"), wait)
            time.sleep(HANG_S)
            return
        if b.mode == "think":
            texts = ["<think>", *(f"r{i}" for i in range(b.reasoning - 1)), "</think>", "\n\n"]
            pieces = [piece(t) for t in texts]
        else:
            pieces = [piece(f"r{i}", reasoning=True) for i in range(b.reasoning)]
        pieces += [piece(f" a{i}") for i in range(b.answer)]
        for data in pieces:
            self._send(data, wait)
            wait = b.gap_s
        finish = _chunk({} if chat else None, "", finish=b.finish)
        self._send(finish, 0)
        self._send(b"data: [DONE]\n\n", 0)


class _Listener(ThreadingHTTPServer):
    request_queue_size = 256  # load tests connect many at once; the default backlog (5) drops SYNs (1 s retries)


class FakeServer:
    def __init__(self) -> None:
        self.behaviour = Behaviour()
        handler = type("Handler", (_Handler,), {"behaviour": self.behaviour})
        self.httpd = _Listener(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

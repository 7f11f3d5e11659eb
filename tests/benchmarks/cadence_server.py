"""A loopback mock of an OpenAI streaming server that sends tokens at a fixed cadence, in its own process (so
the load generator under test does not share its CPU time slice or its event loop). One asyncio loop serves
every connection: `tokens` chat chunks `gap_s` apart (the first after one gap), then [DONE], then close; a GET
(health, model list) gets one model's list."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from multiprocessing.connection import Connection

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
# Any GET (GuideLLM's /health and /v1/models before its run): one model, then close.
MODELS = b'{"object": "list", "data": [{"id": "mock", "object": "model"}]}'
GET_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
    + f"Content-Length: {len(MODELS)}\r\n\r\n".encode()
    + MODELS
)


def _chunk(text: str, finish: str | None = None) -> bytes:
    delta = {"content": text} if text else {}
    return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n".encode()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tokens: int, gap_s: float) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        if head.startswith(b"GET "):
            writer.write(GET_ANSWER)
            await writer.drain()
            return
        writer.write(HEAD)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for number in range(tokens):
            # sleep to the absolute due time: the cadence does not drift with the writes
            await asyncio.sleep(max(0.0, start + (number + 1) * gap_s - loop.time()))
            writer.write(_chunk(f" t{number}"))
        writer.write(_chunk("", "length") + b"data: [DONE]\n\n")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _main(tokens: int, gap_s: float, port_out: Connection) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, tokens, gap_s), "127.0.0.1", 0, backlog=4096, reuse_address=True
    )
    port_out.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _run(tokens: int, gap_s: float, port_out: Connection) -> None:
    asyncio.run(_main(tokens, gap_s, port_out))


class CadenceServer:
    """Start with `with CadenceServer(tokens, gap_s) as url:`; the process is killed on exit."""

    def __init__(self, tokens: int, gap_s: float) -> None:
        self.tokens, self.gap_s = tokens, gap_s
        receive, send = multiprocessing.Pipe(duplex=False)
        self.process = multiprocessing.get_context("spawn").Process(
            target=_run, args=(tokens, gap_s, send), daemon=True
        )
        self._receive = receive

    def __enter__(self) -> str:
        self.process.start()
        if not self._receive.poll(30):
            self.process.kill()
            raise RuntimeError("the cadence server did not start within 30 s")
        return f"http://127.0.0.1:{self._receive.recv()}/v1"

    def __exit__(self, *exc: object) -> None:
        self.process.kill()
        self.process.join(10)

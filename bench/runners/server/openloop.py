"""One load point's requests on a schedule (open loop) or from N users (closed loop), with the client's own
account: every request's intended and actual send time on one monotonic clock (time.perf_counter, which
asyncio's loop clock also reads on Linux), and the client's CPU time over the point.

Bounds: at most len(offsets) (open) or `count` (closed) requests, none sent after `duration_s`, and every
request still running at 2 x duration_s is cancelled, awaited and recorded as incomplete: no request is left
running when the point ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.runners.server.stream import RequestRecord

START_DELAY_S = 0.02  # the first intended send is this far ahead, so it is not late before the loop starts
CANCELLED = "cancelled: still running when the load point's bound (2 x load_duration_s) ended"

# A request's record (number and prompt length filled) -> the same record, streamed (client.stream_request
# sets record.sent_s when the request actually starts).
SendOne = Callable[[RequestRecord], Awaitable[RequestRecord]]
MakeRecord = Callable[[int], RequestRecord]


@dataclass
class Sent:
    """One request of a load point: when the schedule wanted it sent (perf_counter s) and its record."""

    intended_s: float
    record: RequestRecord
    incomplete: bool = False

    @property
    def lag_s(self) -> float:
        """Actual minus intended send time: how late the client was (0 when it never got to send)."""
        return max(0.0, self.record.sent_s - self.intended_s) if self.record.sent_s else 0.0


@dataclass
class LoadRun:
    """A load point's requests in the order they were due, and the client's wall and CPU seconds over it."""

    sent: list[Sent] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def client_cpu_pct(self) -> float | None:
        """The load generator's CPU use, percent of one core (its event loop runs on one)."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else None


async def _finish(tasks: dict[asyncio.Task[RequestRecord], Sent], until_s: float) -> None:
    """Wait for the running requests until `until_s`, then cancel the rest and wait for them to end."""
    pending = {t for t in tasks if not t.done()}
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(0.0, until_s - time.perf_counter()))
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    for task in pending:
        sent = tasks[task]
        sent.incomplete = True
        sent.record.error = CANCELLED
        sent.record.end_s = sent.record.end_s or time.perf_counter()


async def run_open(offsets_s: Sequence[float], duration_s: float, make: MakeRecord, send: SendOne) -> LoadRun:
    """Send request i at start + offsets_s[i] whatever the server's state (open loop)."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    start = wall_start + START_DELAY_S
    tasks: dict[asyncio.Task[RequestRecord], Sent] = {}
    run = LoadRun()
    for number, offset in enumerate(offsets_s):
        if offset >= duration_s:
            break
        intended = start + float(offset)
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = Sent(intended, make(number))
        run.sent.append(sent)
        tasks[asyncio.create_task(send(sent.record))] = sent
    await _finish(tasks, start + 2.0 * duration_s)
    run.wall_s, run.cpu_s = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return run


async def run_closed(users: int, count: int, duration_s: float, make: MakeRecord, send: SendOne) -> LoadRun:
    """N users, each sending its next request the moment its previous one ended (its intended send time), until
    `count` requests were sent or `duration_s` passed."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    run = LoadRun()
    tasks: dict[asyncio.Task[RequestRecord], Sent] = {}
    numbers = iter(range(count))
    stop_s = wall_start + duration_s

    async def user() -> None:
        intended = time.perf_counter()
        while intended < stop_s:
            number = next(numbers, None)
            if number is None:
                return
            sent = Sent(intended, make(number))
            run.sent.append(sent)
            task = asyncio.create_task(send(sent.record))
            tasks[task] = sent
            await asyncio.wait({task})
            intended = time.perf_counter()

    users_done = asyncio.gather(*(user() for _ in range(users)))
    try:
        await asyncio.wait_for(asyncio.shield(users_done), timeout=2.0 * duration_s)
    except TimeoutError:
        pass
    await _finish(tasks, wall_start + 2.0 * duration_s)
    users_done.cancel()
    await asyncio.gather(users_done, return_exceptions=True)
    run.sent.sort(key=lambda s: s.intended_s)
    run.wall_s, run.cpu_s = time.perf_counter() - wall_start, time.process_time() - cpu_start
    return run

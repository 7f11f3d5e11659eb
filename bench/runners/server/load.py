"""Closed-loop load: N virtual users, each sending its next request when its previous one has ended.

Every user sends `warmup` warm-up requests and then `repetitions` measured ones: round r is every user's r-th
measured request. The loop is bounded in count (users x requests) and in time (each request by its timeout, the
whole by their sum).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.runners.server.stream import RequestRecord

# user, index (warm-ups first), warm-up? -> the finished record
SendRequest = Callable[[int, int, bool], Awaitable[RequestRecord]]


@dataclass(frozen=True)
class ClosedLoop:
    users: int
    warmup: int
    repetitions: int
    request_timeout_s: float

    @property
    def deadline_s(self) -> float:
        """The whole loop's bound: one user's requests back to back, each at its timeout, plus a margin."""
        return (self.warmup + self.repetitions) * self.request_timeout_s + 10.0

    async def _user(self, user: int, send: SendRequest) -> list[RequestRecord]:
        records = []
        for index in range(self.warmup + self.repetitions):
            records.append(await send(user, index, index < self.warmup))
        return records

    async def run(self, send: SendRequest) -> list[RequestRecord]:
        """Every request's record, warm-ups included (record.warmup says which)."""
        async with asyncio.timeout(self.deadline_s):
            per_user = await asyncio.gather(*(self._user(user, send) for user in range(self.users)))
        return [record for records in per_user for record in records]

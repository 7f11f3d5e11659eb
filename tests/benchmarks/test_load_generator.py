"""The load generator against a loopback mock streaming at a fixed cadence (prints figures; no timed assertion).

Two figures, each the highest step that passes both accuracy limits:
  - Poisson rate: requests/s, arrivals as a `poisson` load point sends them
  - concurrent streams: N requests due evenly over the first RAMP_S (shorter than one stream), so all N are
    open together while the later ones are still being sent on schedule
Limits: schedule lag p99 <= 5 ms (actual minus intended send time, bench.runners.server.loadpoint) and ITL error
<= 1 ms (the median inter-token gap the client measured minus the mock's cadence; p99 of |gap - cadence| is
printed beside it). Every step is bounded (STEP_S of arrivals, requests cancelled at 2 x STEP_S).

GuideLLM's figures on the same mock come from scripts/guidellm_reference.py when it is there (another issue
adds it); without it only bench's side is printed, and the test says so.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from bench.runners.server.arrivals import send_offsets
from bench.runners.server.client import Endpoint, stream_request
from bench.runners.server.loadpoint import client_check
from bench.runners.server.openloop import LoadRun, run_open
from bench.runners.server.shapes import request_body
from bench.runners.server.stream import RequestRecord
from tests.benchmarks.cadence_server import CadenceServer

ROOT = Path(__file__).resolve().parents[2]
CADENCE_S = 0.02  # the mock's inter-token gap
TOKENS = 25  # per answer: a request streams for 0.5 s
STEP_S = 3.0  # arrivals per rate step
RAMP_S = 0.25  # the streams step's arrivals: within half a stream's length
LAG_LIMIT_MS = 5.0
ITL_LIMIT_MS = 1.0
RATES = (10, 20, 40, 80, 160, 320)
STREAMS = (16, 32, 64, 128, 256, 512)


async def _load(url: str, offsets: np.ndarray) -> LoadRun:
    endpoint = Endpoint(url)
    body = request_body(True, "mock", "hello", TOKENS, True, seed=0)

    def make(number: int) -> RequestRecord:
        return RequestRecord(user=number, index=number, warmup=False, prompt_tokens=1)

    async with endpoint.client(len(offsets)) as client:

        async def send(record: RequestRecord) -> RequestRecord:
            return await stream_request(client, endpoint, "/chat/completions", body, record, 2 * STEP_S)

        return await run_open(list(offsets), STEP_S, make, send)


def _accuracy(run: LoadRun) -> tuple[float, float, float, int]:
    """(lag p99 ms, ITL error ms (median gap - cadence), p99 |gap - cadence| ms, failed requests)."""
    lag = client_check(run)[0]["schedule_lag_ms_p99"] or 0.0
    print(f"    client CPU {run.client_cpu_pct or 0:.0f} % of a core over {run.wall_s:.1f} s", end="")
    gaps = np.array([g for s in run.sent if s.record.ok for g in s.record.gaps_s])
    failed = sum(not s.record.ok for s in run.sent)
    if gaps.size == 0:
        return lag, float("inf"), float("inf"), failed
    error = abs(float(np.median(gaps)) - CADENCE_S) * 1000.0
    return lag, error, float(np.percentile(np.abs(gaps - CADENCE_S), 99)) * 1000.0, failed


def _steps(url: str, label: str, schedules: list[tuple[float, np.ndarray]]) -> tuple[float, int]:
    """Runs the steps in order until one fails a limit: the highest passing step's value (0: none), and how many
    requests of the first step failed (the mock answers every one: any failure is the client's)."""
    best, first_failed = 0.0, -1
    for value, offsets in schedules:
        lag, error, tail, failed = _accuracy(asyncio.run(_load(url, offsets)))
        first_failed = failed if first_failed < 0 else first_failed
        passed = lag <= LAG_LIMIT_MS and error <= ITL_LIMIT_MS and failed == 0
        print(
            f"; {label} {value:>5g}: lag p99 {lag:7.2f} ms, ITL error {error:5.2f} ms (p99 |gap - cadence| "
            f"{tail:6.2f} ms), failed {failed} -> {'ok' if passed else 'over a limit'}"
        )
        if not passed:
            break
        best = value
    return best, first_failed


@pytest.mark.timeout(600)
def test_load_generator_capacity(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(
            f"\nload generator vs a loopback mock ({TOKENS} tokens every {CADENCE_S * 1000:g} ms; limits: lag p99 "
            f"<= {LAG_LIMIT_MS:g} ms, ITL error <= {ITL_LIMIT_MS:g} ms; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs)"
        )
        with CadenceServer(TOKENS, CADENCE_S) as url:
            rate, rate_failed = _steps(
                url, "poisson rate", [(r, send_offsets("poisson", r, int(r * STEP_S), STEP_S, seed=1)) for r in RATES]
            )
            streams, streams_failed = _steps(
                url, "streams at once", [(n, np.linspace(0.0, RAMP_S, n)) for n in STREAMS]
            )
        print(
            f"bench: highest Poisson rate {rate:g} requests/s, most concurrent streams {streams:g} "
            "(0: not even the first step kept both limits on this machine now)"
        )
        reference = ROOT / "scripts" / "guidellm_reference.py"
        if reference.exists():
            print(f"GuideLLM's side: run {reference.relative_to(ROOT)} against the same mock for its figures")
        else:
            print("GuideLLM's side: not measured (scripts/guidellm_reference.py is not in this tree)")
    assert rate_failed == 0 and streams_failed == 0  # every request of the first steps streamed to its end

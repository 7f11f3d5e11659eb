"""The load generator against a loopback mock streaming at a fixed cadence, bench's and GuideLLM's side by side
in one run (prints figures and their ratio; no timed assertion).

Two figures per tool, each the highest step of one ladder that passes both accuracy limits:
  - Poisson rate: requests/s (bench: a `poisson` load point's arrivals; GuideLLM: its `poisson` profile)
  - concurrent streams: N requests due evenly over the first RAMP_S (shorter than one stream), so all N are
    open together while the later ones are still being sent on schedule (GuideLLM: `constant` at (N-1)/RAMP_S,
    N requests: the same schedule)
Limits, the same definition on both sides:
  - schedule lag p99 <= 5 ms: when the client began each request minus when its schedule wanted it (bench:
    `sent_s` - intended, bench.runners.server.openloop; GuideLLM: `resolve_start` - `targeted_start`, both taken
    before connecting, scripts/guidellm_reference.py ScheduleAccount). GuideLLM's own `request_dispatch_delay`
    (to its first header write, connecting included) is printed beside it.
  - ITL error <= 1 ms: the median over requests of each one's (last token - first token) / (tokens - 1), minus
    the mock's cadence (GuideLLM keeps only that per-request mean; bench's p99 |gap - cadence| over every gap
    is printed beside it).
The ladders run interleaved (bench's step k, GuideLLM's step k, step k+1, ...), each tool stopping at its first
failing step. Every step is bounded: bench's arrivals within STEP_S and requests cancelled at 2 x STEP_S;
GuideLLM's max_requests and max_duration 2 x STEP_S (plus its start-up margin).
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.runners.server.arrivals import send_offsets
from bench.runners.server.client import Endpoint, stream_request
from bench.runners.server.openloop import LoadRun, run_open
from bench.runners.server.shapes import request_body
from bench.runners.server.stream import RequestRecord
from bench.stats import percentile
from scripts.guidellm_reference import (
    INSTALL_HINT,
    Load,
    Shape,
    guidellm_python,
    run_benchmark,
    schedule_account,
    tokenizer_dir,
)
from tests.benchmarks.cadence_server import CadenceServer

pytestmark = pytest.mark.timing

CADENCE_S = 0.02  # the mock's inter-token gap
TOKENS = 25  # per answer: a request streams for 0.5 s
PROMPT_TOKENS = 16  # GuideLLM builds prompts of this length (the mock ignores them)
STEP_S = 3.0  # arrivals per rate step
RAMP_S = 0.25  # the streams step's arrivals: within half a stream's length
LAG_LIMIT_MS = 5.0
ITL_LIMIT_MS = 1.0
RATES = (5, 10, 20, 40, 80, 160, 320)
STREAMS = (4, 8, 16, 32, 64, 128, 256, 512)


@dataclass(frozen=True)
class Accuracy:
    lag_p50_ms: float  # shown: where most requests were sent, beside the p99 the limit holds
    lag_p99_ms: float
    itl_error_ms: float
    failed: int  # the mock answers every request: any failure is the client's
    detail: str  # what only this tool shows

    @property
    def passed(self) -> bool:
        return self.lag_p99_ms <= LAG_LIMIT_MS and self.itl_error_ms <= ITL_LIMIT_MS and self.failed == 0


def _judge(lags_s: list[float], itls_ms: list[float], failed: int, detail: str) -> Accuracy:
    lag = [1000.0 * percentile(lags_s, p) if lags_s else float("inf") for p in (50, 99)]
    error = abs(statistics.median(itls_ms) - 1000.0 * CADENCE_S) if itls_ms else float("inf")
    return Accuracy(*lag, error, failed, detail)


async def _load(url: str, offsets: np.ndarray) -> LoadRun:
    endpoint = Endpoint(url)
    body = request_body(True, "mock", "hello", TOKENS, True, seed=0)

    def make(number: int) -> RequestRecord:
        return RequestRecord(user=number, index=number, warmup=False, prompt_tokens=1)

    async with endpoint.client(len(offsets)) as client:

        async def send(record: RequestRecord) -> RequestRecord:
            return await stream_request(client, endpoint, "/chat/completions", body, record, 2 * STEP_S)

        return await run_open(list(offsets), STEP_S, make, send)


def _bench(url: str, offsets: np.ndarray) -> Accuracy:
    run = asyncio.run(_load(url, offsets))
    ok = [s.record for s in run.sent if s.record.ok]
    gaps = np.array([g for r in ok for g in r.gaps_s])
    tail = float(np.percentile(np.abs(gaps - CADENCE_S), 99)) * 1000.0 if gaps.size else float("inf")
    return _judge(
        [s.lag_s for s in run.sent if s.record.sent_s],
        [1000.0 * t for r in ok if (t := r.tpot_s) is not None],
        len(run.sent) - len(ok),
        f"p99 |gap - cadence| {tail:6.2f} ms, client CPU {run.client_cpu_pct or 0:3.0f} % of a core",
    )


def _guidellm(url: str, tokenizer: Path, load: Load, requests: int) -> Accuracy:
    shape = Shape(PROMPT_TOKENS, TOKENS, requests, max_seconds=2 * STEP_S, endpoint="chat")
    account = schedule_account(run_benchmark(url, tokenizer, load, shape, seed=1))
    delay = 1000.0 * percentile(account.dispatch_delay_s, 99) if account.dispatch_delay_s else float("inf")
    detail = f"its dispatch delay p99 {delay:7.2f} ms"
    if account.unscheduled:  # GuideLLM's Poisson start race (scripts/guidellm_reference.schedule_account)
        detail += f"; {account.unscheduled} requests without a target in the run, sent at once"
    return _judge(account.start_lag_s, account.itl_ms, account.failed + account.unscheduled, detail)


Step = tuple[float, Callable[[], Accuracy], Callable[[], Accuracy] | None]


def _ladder(label: str, steps: list[Step]) -> tuple[float, float | None, int]:
    """Runs bench's and GuideLLM's step k one after the other, each tool until its first failing step: the
    highest passing value of each (0: none; GuideLLM None: not run), and bench's failed requests at step 1."""
    best: dict[str, float] = {"bench": 0.0, "GuideLLM": 0.0}
    first_failed = -1
    going = {"bench": True, "GuideLLM": steps[0][2] is not None}
    for value, ours, theirs in steps:
        for tool, measure in (("bench", ours), ("GuideLLM", theirs)):
            if not going[tool] or measure is None:
                continue
            acc = measure()
            first_failed = acc.failed if tool == "bench" and first_failed < 0 else first_failed
            going[tool] = acc.passed
            best[tool] = value if acc.passed else best[tool]
            print(
                f"  {label} {value:>4g} {tool:>8}: lag p50 {acc.lag_p50_ms:5.2f} / p99 {acc.lag_p99_ms:7.2f} ms, ITL error "
                f"{acc.itl_error_ms:5.2f} ms, failed {acc.failed} ({acc.detail}) -> "
                f"{'ok' if acc.passed else 'over a limit'}"
            )
        if not any(going.values()):
            break
    return best["bench"], best["GuideLLM"] if steps[0][2] is not None else None, first_failed


def _side_by_side(label: str, ours: float, theirs: float | None) -> str:
    if theirs is None:
        return f"{label}: bench {ours:g}, GuideLLM not measured ({INSTALL_HINT})"
    ratio = f"{ours / theirs:.2f}" if theirs else "n/a (GuideLLM passed no step)"
    return f"{label}: bench {ours:g}, GuideLLM {theirs:g}, bench / GuideLLM {ratio}"


@pytest.mark.timeout(1800)
def test_load_generator_capacity(capsys: pytest.CaptureFixture[str], smollm2_path: Path) -> None:
    # GuideLLM builds its prompts with a tokenizer: SmolLM2's, derived from the installed GGUF (no hub).
    tokenizer = tokenizer_dir(smollm2_path) if guidellm_python() is not None else None
    with capsys.disabled():
        print(
            f"\nload generators vs a loopback mock ({TOKENS} tokens every {CADENCE_S * 1000:g} ms; limits: lag p99 "
            f"<= {LAG_LIMIT_MS:g} ms, ITL error <= {ITL_LIMIT_MS:g} ms; load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs)"
        )
        with CadenceServer(TOKENS, CADENCE_S) as url:

            def theirs(load: Load, requests: int) -> Callable[[], Accuracy] | None:
                return None if tokenizer is None else lambda: _guidellm(url, tokenizer, load, requests)

            rates = _ladder(
                "poisson rate",
                [
                    (
                        r,
                        lambda r=r: _bench(url, send_offsets("poisson", r, int(r * STEP_S), STEP_S, seed=1)),
                        theirs(Load("poisson", r), int(r * STEP_S)),
                    )
                    for r in RATES
                ],
            )
            streams = _ladder(
                "streams",
                [
                    (
                        n,
                        lambda n=n: _bench(url, np.linspace(0.0, RAMP_S, n)),
                        theirs(Load("constant", (n - 1) / RAMP_S), n),
                    )
                    for n in STREAMS
                ],
            )
        print(f"(load average {os.getloadavg()[0]:.1f} at the end; 0: not even the first step kept both limits)")
        print(_side_by_side("highest Poisson rate (requests/s)", *rates[:2]))
        print(_side_by_side("most concurrent streams", *streams[:2]))
    assert rates[2] == 0 and streams[2] == 0  # every request of bench's first steps streamed to its end

"""The server backend agrees with GuideLLM (PyPI, scripts/guidellm_reference.py) against one llama-server on
SmolLM2 (1 thread, see SERVER_THREADS): the same closed-loop concurrency, the same request shapes (raw
completions of exact prompt and output token counts, greedy), rounds interleaved (bench, GuideLLM, GuideLLM,
bench, ...), the median ratio per figure held to the agreement rule of tests/test_llama_tools.py.

Like for like (what GuideLLM measures is in scripts/guidellm_reference.py): TTFT median vs its TTFT median; the
per-request time per output token after the first (bench's tpot_ms) vs its ITL, which is that same per-request
mean; output tok/s and requests/s vs its measured requests' tokens and count over their span. `make test`
installs GuideLLM (scripts/install_guidellm.sh) and sets BENCH_REQUIRE_LLAMA_TOOLS=1, so there these tests run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import pytest

from bench.runners.server.client import post_json
from bench.runners.server.runner import ServerEngine
from bench.runners.server.shapes import PromptMaker
from bench.runners.server.tokens import TokenCounter
from scripts.guidellm_reference import (
    GUIDELLM_VENV,
    INSTALL_HINT,
    Load,
    Shape,
    count_tokens,
    guidellm_python,
    run_guidellm,
    tokenizer_dir,
)
from tests.conftest import cpu_cell
from tests.test_llama_tools import agreement, interleaved_ratios, missing, need_tool

if TYPE_CHECKING:
    from bench.suite import Cell

pytestmark = [pytest.mark.slow, pytest.mark.timing]

# One server thread: at 2 on this 2-core machine the server's threads and the client's processes contend for the
# cores, and a client's own CPU use (GuideLLM runs a process per stream) slows the server it measures; with one
# thread, what is compared is what each tool measures.
SERVER_THREADS = 1
PROMPT_TOKENS = 64
OUTPUT_TOKENS = 32
REQUESTS = {1: 4, 4: 8}  # measured requests per side and round, after one warm-up per user
RAW = ("TTFT p50", "time per output token p50", "output tok/s", "requests/s")
RELATIVE = (
    "time per output token p50 / server's",
    "output tok/s x server time per token",
)


@pytest.fixture(scope="module")
def guidellm_tokenizer(smollm2_path: Path) -> Path:
    need_tool("llama-server")
    if guidellm_python() is None:
        missing(f"GuideLLM is not installed in {GUIDELLM_VENV}: {INSTALL_HINT}")
    return tokenizer_dir(smollm2_path)


@contextmanager
def _engine(model: Path, parallel: int) -> Iterator[ServerEngine]:
    """One llama-server with `parallel` slots, started by bench's server backend, for both sides."""
    cell = _cell(parallel)
    engine = ServerEngine(model, cell)
    try:
        engine.load()
        engine.start_context(cell)
        yield engine
    finally:
        engine.close()


def _cell(parallel: int) -> Cell:
    return cpu_cell(
        "server",
        "Q4_1",
        threads=SERVER_THREADS,
        parallel=parallel,
        prompt_tokens=PROMPT_TOKENS,
        gen_tokens=OUTPUT_TOKENS,
        repetitions=REQUESTS[parallel] // parallel,
        warmup=1,
        endpoint="completions",
    )


def test_guidellm_tokenizer_counts_as_the_server(smollm2_path: Path, guidellm_tokenizer: Path) -> None:
    """The tokenizer derived from the GGUF for GuideLLM counts every text as llama-server's /tokenize does."""
    with _engine(smollm2_path, 1) as engine:
        maker = PromptMaker(TokenCounter(engine.endpoint), chat=False, seed=7)
        try:
            texts = [maker.prompt(n, tokens) for n, tokens in enumerate((16, 64, 128, 300))]
        finally:
            maker.close()
        texts += ["Hello world, this is a test.", "naïve café — ünïcode 😀 and\ttabs\n\nnew lines", "  leading spaces"]
        served = [
            len(post_json(engine.endpoint, "/tokenize", {"content": t, "add_special": True})["tokens"]) for t in texts
        ]
        assert count_tokens(guidellm_tokenizer, texts) == served


def _server_counters(engine: ServerEngine) -> dict[str, float]:
    """llama-server's own cumulative prompt and generation times and token counts (its /metrics)."""
    with httpx2.Client(trust_env=False, timeout=10.0) as client:
        text = client.get(engine.endpoint.root + "/metrics").text
    return {
        name.removeprefix("llamacpp:"): float(value)
        for name, value in (line.split() for line in text.splitlines() if line.startswith("llamacpp:"))
    }


def _with_server_times(engine: ServerEngine, run: Callable[[], tuple[float, ...]]) -> tuple[float, ...]:
    """`run`'s (TTFT ms, per-token ms, output tok/s, requests/s), then its per-token time and tok/s relative to
    llama-server's own time per generated token meanwhile. (Not TTFT: the server's prompt time per slot depends
    on how arrivals batch, which is the load pattern, not the measurement.)"""
    before = _server_counters(engine)
    ttft, per_token, tok_s, rps = run()
    after = _server_counters(engine)
    token_ms = 1000.0 * (after["tokens_predicted_seconds_total"] - before["tokens_predicted_seconds_total"])
    token_ms /= after["tokens_predicted_total"] - before["tokens_predicted_total"]
    return ttft, per_token, tok_s, rps, per_token / token_ms, tok_s * token_ms


@pytest.mark.parametrize("parallel", [1, 4])
def test_server_figures_agree_with_guidellm(smollm2_path: Path, guidellm_tokenizer: Path, parallel: int) -> None:
    """The ratios drift with a shared machine's load between two runs: the per-token figures are also shown
    relative to llama-server's own time per token during each tool's run, which takes the server's speed out."""
    cell = _cell(parallel)
    requests = REQUESTS[parallel]
    shape = Shape(PROMPT_TOKENS, OUTPUT_TOKENS, requests, warmup_requests=parallel, max_seconds=300)
    overheads: list[float] = []
    with _engine(smollm2_path, parallel) as engine:

        def ours() -> tuple[float, ...]:
            row = engine.measure(cell)
            assert row["request_errors"] == 0 and row["requests_measured"] == requests
            overheads.append(row["http_overhead_ttft_ms"])
            return row["ttft_ms_p50"], row["tpot_ms_p50"], row["decode_tok_s_mean"], row["request_throughput_rps"]

        seeds = itertools.count(1)

        def theirs() -> tuple[float, ...]:
            # A new seed each run: GuideLLM's prompts repeat for a seed, and llama-server would answer a repeated
            # prompt from a slot's cache (bench's engine numbers every prompt it makes apart, likewise).
            load = Load("concurrent", parallel)
            figures = run_guidellm(engine.endpoint.base_url, guidellm_tokenizer, load, shape, seed=next(seeds))
            assert figures.requests == requests
            assert figures.prompt_tokens_median == PROMPT_TOKENS and figures.output_tokens_median == OUTPUT_TOKENS
            return figures.ttft_ms_median, figures.itl_ms_median, figures.output_tok_s, figures.request_rps

        ratios = interleaved_ratios(
            lambda: _with_server_times(engine, ours), lambda: _with_server_times(engine, theirs)
        )
    print(f"\nbench / GuideLLM at {parallel} concurrent users, {len(ratios[0])} interleaved rounds")
    problems = [agreement(name, values) for name, values in zip(RAW, ratios, strict=False)]
    print("(shown, not held) relative to llama-server's own time per token in each run:")
    for name, values in zip(RELATIVE, ratios[len(RAW) :], strict=True):
        agreement(name, values)
    assert not any(problems), problems
    # The client's TTFT contains the server's own prompt time (llama-server's `timings`).
    assert min(overheads) >= 0, overheads

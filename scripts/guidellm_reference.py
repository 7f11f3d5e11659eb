"""GuideLLM (PyPI), the independent serving benchmark bench's server figures are checked against: one run at a
load profile against an OpenAI-compatible URL, its JSON report read into the figures bench also measures
(tests/test_server_guidellm.py; tests/benchmarks/test_load_generator.py reads its schedule account at constant
and Poisson rates: each request's targeted and actual start).

GuideLLM lives in its own venv, .venv-guidellm (scripts/install_guidellm.sh): its pins clash with bench's. It
needs a Hugging Face tokenizer to build prompts of exact token counts; with no hub at hand, the tokenizer is
derived from the model's GGUF file by transformers and cached beside bench's derived models.

What GuideLLM measures (guidellm 0.8.1, schemas/base/request_stats.py, backends/openai/http.py), per request:
  - TTFT: first streamed token minus request_start, taken when the request's headers start to be written (on
    an already open connection, the same instant as bench's send time, less building the request);
  - ITL: (last token - first token) / (output tokens - 1), a per-request mean: bench's `tpot_ms`, not bench's
    `itl_ms` (which is every single gap);
  - time per output token: (last token - request_start) / output tokens, TTFT included;
  - output tok/s and requests/s: events inside its measured window over the window's length.
Its window and warm-up cut requests in ways that leave 2 or 3 of 4 in a short run, so the figures here come
from its per-request records in the report (each with GuideLLM's own TTFT and ITL): the first
`warmup_requests` by start time are left out, as bench's warm-ups, and output tok/s and requests/s are the rest's
tokens and count over their span (first start to last end), as bench's request_throughput_rps. Its own windowed
figures are kept beside them (`window_*`). At a constant or Poisson rate GuideLLM cancels what is still in
flight when its request count is reached: `requests` counts the successful ones only (a smoke run of 6 at
2 requests/s kept 5).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filelock import FileLock  # noqa: E402

from bench.models.references import cache_dir  # noqa: E402
from bench.runners.server.loadpoint import PointBounds, edge_counts  # noqa: E402
from bench.stats import percentile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GUIDELLM_VENV = ROOT / ".venv-guidellm"
INSTALL_HINT = "run scripts/install_guidellm.sh (make test does)"
# GuideLLM's default is up to 10 worker processes, each polling its queues: on this 2-core machine they took
# about 90 % of a core during a rate sweep, beside the one-thread server they measured. One worker runs every
# stream in one event loop, as bench's client does, so what differs between the two is what each measures.
WORKER_PROCESSES = 1
RUN_MARGIN_S = 120.0  # a run's wall-clock bound beyond its own duration: start-up (imports, worker processes)
UNSCHEDULED_S = 3600.0  # a target this long before a run's first request began is no time of that run

DERIVE_TOKENIZER = """
import sys
from pathlib import Path
from transformers import AutoTokenizer
model, out = Path(sys.argv[1]), sys.argv[2]
AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name).save_pretrained(out)
"""

# GuideLLM's CLI, with one fix: 0.8.1's AsyncPoissonStrategy.init_processes_start sets the start event (in
# ThroughputStrategy's) before its shared offset, so a worker that wakes in between adds its gaps to the offset's
# initial -1.0 and targets times near 1970, all overdue: its requests go out at once (on a busy machine it did
# for all 12 requests of two runs in a row, and for 15 of a load-generator step; 0 of 5 unpatched runs on a quiet
# machine). The fix sets the offset first; nothing else of GuideLLM changes. The main process calls
# init_processes_start (scheduler/worker_group.py), so patching it there is enough; schedule_account still counts
# any request without a target in its run.
RUN_GUIDELLM = """
import sys
from guidellm.__main__ import cli
from guidellm.scheduler.strategies import AsyncPoissonStrategy, ThroughputStrategy

def init_processes_start(self, start_time):
    with self._offset.get_lock():
        self._offset.value = start_time
    ThroughputStrategy.init_processes_start(self, start_time)

AsyncPoissonStrategy.init_processes_start = init_processes_start
sys.argv[0] = "guidellm"
sys.exit(cli())
"""

COUNT_TOKENS = """
import json, sys
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
print(json.dumps([len(tokenizer.encode(text)) for text in json.load(sys.stdin)]))
"""


def guidellm_python() -> Path | None:
    """The Python of GuideLLM's venv, None when it is not installed."""
    python = GUIDELLM_VENV / "bin" / "python"
    return python if (GUIDELLM_VENV / "bin" / "guidellm").is_file() and python.is_file() else None


def _python() -> Path:
    python = guidellm_python()
    if python is None:
        raise RuntimeError(f"GuideLLM is not installed in {GUIDELLM_VENV}: {INSTALL_HINT}")
    return python


def tokenizer_dir(model: Path) -> Path:
    """A Hugging Face tokenizer folder derived from `model` (a GGUF file), made once and cached."""
    stat = model.stat()
    key = hashlib.sha256(f"{model.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    folder = cache_dir() / "guidellm-tokenizers" / f"{model.stem}-{key}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "tokenizer.json").is_file():
            with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:
                subprocess.run(
                    [str(_python()), "-c", DERIVE_TOKENIZER, str(model), scratch],
                    check=True,
                    capture_output=True,
                    timeout=600,
                )
                Path(scratch).rename(folder)
    return folder


def count_tokens(tokenizer: Path, texts: list[str]) -> list[int]:
    """Each text's tokens as GuideLLM's tokenizer counts them (special tokens added as for a prompt)."""
    done = subprocess.run(
        [str(_python()), "-c", COUNT_TOKENS, str(tokenizer)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return [int(n) for n in json.loads(done.stdout)]


@dataclass(frozen=True)
class Load:
    """A GuideLLM profile: `concurrent` streams (closed loop), `constant` / `poisson` arrivals per second, or a
    `sweep` of that many points (synchronous, throughput, then constant rates between: its SweepProfile)."""

    kind: Literal["concurrent", "constant", "poisson", "sweep"]
    value: float

    def profile(self) -> dict[str, Any]:
        if self.kind == "sweep":
            return {"kind": "sweep", "sweep_size": int(self.value)}
        size = {"streams": int(self.value)} if self.kind == "concurrent" else {"rate": self.value}
        return {"kind": self.kind, **size}


@dataclass(frozen=True)
class Shape:
    """What each request is: exact prompt and output token counts, the endpoint, and the run's bounds."""

    prompt_tokens: int
    output_tokens: int
    requests: int  # measured requests (after the warm-ups)
    warmup_requests: int = 0
    max_seconds: float = 300.0
    endpoint: Literal["completions", "chat"] = "completions"


@dataclass(frozen=True)
class GuideLLMFigures:
    """A run's figures in bench's units (ms, tok/s, requests/s), over the successful measured requests."""

    ttft_ms_median: float
    ttft_ms_p99: float
    itl_ms_median: float  # per request (last - first token) / (tokens - 1): bench's tpot_ms
    time_per_output_token_ms_median: float  # per request (last token - start) / tokens: TTFT included
    output_tok_s: float  # output tokens over the requests' span
    request_rps: float
    requests: int
    prompt_tokens_median: float
    output_tokens_median: float
    window_output_tok_s: float  # GuideLLM's own, over its measured window
    window_request_rps: float


def _check(benchmark: dict[str, Any], needed: int) -> None:
    done = benchmark["requests"]["successful"]
    if benchmark["requests"]["errored"] or len(done) < needed:
        raise RuntimeError(
            f"guidellm: {len(done)} requests succeeded, {len(benchmark['requests']['errored'])} failed; "
            f"first error: {(benchmark['requests']['errored'] or [{}])[0].get('info', {}).get('error')}"
        )


def figures(benchmark: dict[str, Any], warmup_requests: int = 0) -> GuideLLMFigures:
    """A closed-loop benchmark's figures (one of a GuideLLM JSON report's `benchmarks`), less its first
    `warmup_requests` by start time."""
    _check(benchmark, warmup_requests + 1)
    kept = sorted(benchmark["requests"]["successful"], key=lambda r: r["request_start_time"])[warmup_requests:]
    return _figures_of(benchmark, kept)


def point_figures(benchmark: dict[str, Any], warmup_pct: int, cooldown_pct: int) -> GuideLLMFigures:
    """An open-loop benchmark's figures over the requests bench's load point would measure: every request
    that started, in the order its schedule wanted them (`targeted_start`), less the first and last percentages
    (bench.runners.server.loadpoint.edge_counts). GuideLLM cancels what is still running when its count is
    reached; those fall in the cool-down, and one that does not fails the run."""
    requests = benchmark["requests"]
    started = [r for kind in ("successful", "errored", "incomplete") for r in requests[kind]]
    started.sort(key=lambda r: r["info"]["timings"]["targeted_start"])
    warm, cool = edge_counts(len(started), PointBounds(warmup_pct, cooldown_pct))
    kept = started[warm : len(started) - cool]
    ok = {id(r) for r in requests["successful"]}
    if not kept or any(id(r) not in ok for r in kept):
        raise RuntimeError(
            f"guidellm: of {len(started)} requests started, {sum(id(r) not in ok for r in kept)} of the "
            f"{len(kept)} measured did not succeed (errored {len(requests['errored'])}, cancelled "
            f"{len(requests['incomplete'])})"
        )
    return _figures_of(benchmark, kept)


def _figures_of(benchmark: dict[str, Any], kept: list[dict[str, Any]]) -> GuideLLMFigures:
    span = max(r["request_end_time"] for r in kept) - min(r["request_start_time"] for r in kept)
    ttft = [float(r["time_to_first_token_ms"]) for r in kept]
    metrics = benchmark["metrics"]
    return GuideLLMFigures(
        ttft_ms_median=statistics.median(ttft),
        ttft_ms_p99=percentile(ttft, 99),
        itl_ms_median=statistics.median(float(r["inter_token_latency_ms"]) for r in kept),
        time_per_output_token_ms_median=statistics.median(float(r["time_per_output_token_ms"]) for r in kept),
        output_tok_s=sum(int(r["output_tokens"]) for r in kept) / span,
        request_rps=len(kept) / span,
        requests=len(kept),
        prompt_tokens_median=statistics.median(int(r["prompt_tokens"]) for r in kept),
        output_tokens_median=statistics.median(int(r["output_tokens"]) for r in kept),
        window_output_tok_s=float(metrics["output_tokens_per_second"]["successful"]["mean"]),
        window_request_rps=float(metrics["requests_per_second"]["successful"]["mean"]),
    )


@dataclass(frozen=True)
class ScheduleAccount:
    """How a run kept its schedule, per request that started (seconds after the time its profile targeted),
    with each successful request's ITL. GuideLLM 0.8.1's per-request `info.timings` (schemas/base/info.py):
    `targeted_start` (the schedule's time), `resolve_start` (its worker began the request, before connecting:
    the instant bench's `sent_s` is taken) and `request_start` (the request's headers start to be written;
    request_start - targeted_start is its own `request_dispatch_delay`)."""

    start_lag_s: list[float]  # resolve_start - targeted_start: like for like with bench's schedule lag
    dispatch_delay_s: list[float]  # request_start - targeted_start: connecting and building the request included
    itl_ms: list[float]  # per successful request, (last token - first token) / (tokens - 1)
    failed: int  # errored and incomplete (cancelled at its bounds) requests
    unscheduled: int = 0  # requests whose target was no time of this run (see schedule_account): sent at once


def schedule_account(benchmark: dict[str, Any]) -> ScheduleAccount:
    """The schedule lag and ITLs of a benchmark (one of a GuideLLM JSON report's `benchmarks`).

    GuideLLM 0.8.1's Poisson profile can lose its schedule: AsyncPoissonStrategy.init_processes_start sets the
    start event (ThroughputStrategy's) before its shared offset, so a worker that wakes in between adds its gaps
    to the offset's initial -1.0 and targets times near 1970, which are overdue at once: those requests go out
    together. They are counted as `unscheduled`, apart from the lag of the requests that kept a real target."""
    requests = benchmark["requests"]
    started = [r["info"]["timings"] for kind in ("successful", "errored", "incomplete") for r in requests[kind]]
    started = [t for t in started if t.get("targeted_start") is not None and t.get("resolve_start") is not None]
    began = min((t["resolve_start"] for t in started), default=0.0)
    unscheduled = sum(t["targeted_start"] < began - UNSCHEDULED_S for t in started)
    started = [t for t in started if t["targeted_start"] >= began - UNSCHEDULED_S]
    return ScheduleAccount(
        start_lag_s=[max(0.0, t["resolve_start"] - t["targeted_start"]) for t in started],  # as bench's lag_s
        dispatch_delay_s=[t["request_start"] - t["targeted_start"] for t in started if t.get("request_start")],
        itl_ms=[float(r["inter_token_latency_ms"]) for r in requests["successful"] if r["inter_token_latency_ms"]],
        failed=len(requests["errored"]) + len(requests["incomplete"]),
        unscheduled=unscheduled,
    )


def command(url: str, tokenizer: Path, load: Load, shape: Shape, report: Path, seed: int = 0) -> list[str]:
    """GuideLLM's command line for one run. `url` is the server's root or its /v1 base; greedy sampling, as
    bench's requests, so both sides pay the same per-token sampling cost."""
    python = _python()
    backend = {
        "kind": "openai_http",
        "target": url.rstrip("/").removesuffix("/v1"),
        "request_format": "/v1/completions" if shape.endpoint == "completions" else "/v1/chat/completions",
        "extras": {"body": {"temperature": 0.0}},
    }
    data = {"kind": "synthetic_text", "prompt_tokens": shape.prompt_tokens, "output_tokens": shape.output_tokens}
    constraints = [
        {"kind": "max_requests", "count": shape.requests + shape.warmup_requests},
        {"kind": "max_duration", "seconds": shape.max_seconds},
    ]
    return [
        str(python),
        "-c",
        RUN_GUIDELLM,
        "run",
        "--backend", json.dumps(backend),
        "--profile", json.dumps(load.profile()),
        *[arg for c in constraints for arg in ("--constraint", json.dumps(c))],
        "--tokenizer", json.dumps({"kind": "huggingface_auto", "model": str(tokenizer)}),
        "--data", json.dumps(data),
        "--seed", json.dumps({"kind": "static", "value": seed}),
        "--output", json.dumps({"kind": "json", "path": str(report)}),
        "--disable-console",
    ]  # fmt: skip


def run_guidellm(url: str, tokenizer: Path, load: Load, shape: Shape, seed: int = 0) -> GuideLLMFigures:
    """One bounded GuideLLM run and its figures."""
    return figures(run_benchmark(url, tokenizer, load, shape, seed), shape.warmup_requests)


def run_benchmark(url: str, tokenizer: Path, load: Load, shape: Shape, seed: int = 0) -> dict[str, Any]:
    """One bounded GuideLLM run (its request count and duration, plus a start-up margin): its JSON report's
    benchmark, per-request records included."""
    return run_benchmarks(url, tokenizer, load, shape, seed)[0]


def run_benchmarks(url: str, tokenizer: Path, load: Load, shape: Shape, seed: int = 0) -> list[dict[str, Any]]:
    """One bounded GuideLLM run: its JSON report's benchmarks (a sweep has one per point, each bounded by the
    shape's request count and duration)."""
    with tempfile.TemporaryDirectory(prefix="guidellm-") as scratch:
        report = Path(scratch) / "report.json"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "GUIDELLM__MAX_WORKER_PROCESSES": str(WORKER_PROCESSES),
        }
        # Its own process group: a timeout or Ctrl-C ends GuideLLM's worker processes too, not just its main one.
        with subprocess.Popen(
            command(url, tokenizer, load, shape, report, seed),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=scratch,
            process_group=0,
        ) as process:
            try:
                out, err = process.communicate(timeout=shape.max_seconds + RUN_MARGIN_S)
            except BaseException:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
        if process.returncode != 0 or not report.is_file():
            raise RuntimeError(f"guidellm exited with {process.returncode}: {(err or out)[-2000:]}")
        return list(json.loads(report.read_text(encoding="utf-8"))["benchmarks"])


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the server's URL, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("model", type=Path, help="the served GGUF file (its tokenizer builds the prompts)")
    parser.add_argument("--load", choices=("concurrent", "constant", "poisson"), default="concurrent")
    parser.add_argument("--value", type=float, default=1.0, help="streams (concurrent) or requests/s")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--warmup-requests", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    shape = Shape(args.prompt_tokens, args.output_tokens, args.requests, args.warmup_requests, args.max_seconds)
    figures = run_guidellm(args.url, tokenizer_dir(args.model), Load(args.load, args.value), shape)
    print(json.dumps(figures.__dict__, indent=2))

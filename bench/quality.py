"""Quality of a quantization: perplexity, KL divergence and top-token agreement vs a baseline, task accuracy.

Perplexity is measured as llama.cpp's `llama-perplexity` measures it: the whole text is tokenized once (with
BOS if the model adds one), cut into chunks of `context` tokens, each chunk evaluated as a fresh sequence with
its first token replaced by BOS (when the model uses one), and only the second half of each chunk is scored,
so every scored token sees at least context/2 tokens before it.

KL divergence compares each position's next-token distribution with the baseline quantization's. The baseline
is evaluated once and cached on disk, per position: its top-k log-probabilities (+ token ids), the log of the
probability mass outside the top k, k tokens sampled from that remaining mass (systematic sampling, seeded)
with their log-probabilities, and the log-probability of the true next token: tokens x k numbers, not tokens x
vocabulary. KLD = the exact sum over the top k + the tail mass as one bucket + the tail's own divergence,
estimated without bias from the samples. (The bucket alone underestimates KLD by 10-25% for small models,
whose top 64 tokens often hold under 90% of the mass.) Tests check the estimate against the exact KLD.
Logits are processed one chunk at a time, in blocks of rows, so memory is bounded by the context size, never
by the length of the text.

The numeric functions are pure (numpy in, numbers out); `measure_quality` drives a runner inside a worker
process; `QualityScheduler` runs those workers from `bench run`, baseline first.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.errors import BenchError
from bench.runners.registry import precision_order
from bench.suite import SOURCE_QUANT, Cell, QualitySpec, Suite, expand
from bench.tasks import ChoiceItem, GenerateItem, Task, accuracy, context_for, load_task, score_items

if TYPE_CHECKING:
    from bench.models import ResolvedModel
    from bench.runners.base import Runner

BUILTIN_TEXT = "builtin"
BUILTIN_TEXT_PATH = Path(__file__).parent / "data" / "eval_text.txt"
ROWS_PER_BLOCK = 64  # logit rows turned into float64 log-probs at once: bounds memory for big vocabularies
TAIL_SAMPLE_SEED = 20240601  # the baseline's tail samples are reproducible
BASELINE_FORMAT = 1
# Highest precision first: the default baseline is the first of these a model is measured at.
PRECISION_ORDER = precision_order()


# ================================================================ pure numerics


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax (float64 out), with llama-perplexity's arithmetic: float exp, double sum."""
    x = np.asarray(logits, dtype=np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    sum_exp = np.exp(shifted).sum(axis=-1, dtype=np.float64, keepdims=True)
    return shifted.astype(np.float64) - np.log(sum_exp)


def first_scored_row(n_ctx: int) -> int:
    """Rows [n_ctx//2, n_ctx-1) of a chunk's logits are scored; row j predicts the chunk's token j+1."""
    return n_ctx // 2


def scored_per_chunk(n_ctx: int) -> int:
    return n_ctx - 1 - first_scored_row(n_ctx)


def chunk_count(n_tokens: int, n_ctx: int, max_chunks: int) -> int:
    return min(max_chunks, n_tokens // n_ctx)


def chunk_input(tokens: np.ndarray, index: int, n_ctx: int, bos: int | None) -> np.ndarray:
    """Chunk `index` as the model sees it: its first token replaced by BOS when the model uses one."""
    chunk = np.array(tokens[index * n_ctx:(index + 1) * n_ctx], dtype=np.int32)
    if bos is not None:
        chunk[0] = bos
    return chunk


def chunk_targets(tokens: np.ndarray, index: int, n_ctx: int) -> np.ndarray:
    """The true next tokens of the scored rows of chunk `index`."""
    start = index * n_ctx
    return np.asarray(tokens[start + first_scored_row(n_ctx) + 1:start + n_ctx], dtype=np.int64)


@dataclass
class TopK:
    """A baseline's distributions, compactly: per position, the k most probable tokens, the mass of the rest,
    and k tokens drawn from the rest in proportion to their probability."""

    indices: np.ndarray  # int32 [n, k], most probable first (ties: lower token id first)
    logprobs: np.ndarray  # float32 [n, k]
    log_tail: np.ndarray  # float32 [n]: log of the probability mass outside the top k
    tail_indices: np.ndarray  # int32 [n, k]: tokens drawn from outside the top k, weighted by probability
    tail_logprobs: np.ndarray  # float32 [n, k]: their log-probabilities
    target_logprob: np.ndarray  # float32 [n]: log-probability of the true next token

    FIELDS: ClassVar[tuple[str, ...]] = (
        "indices", "logprobs", "log_tail", "tail_indices", "tail_logprobs", "target_logprob")

    def rows(self, start: int, stop: int) -> TopK:
        return TopK(*(getattr(self, name)[start:stop] for name in self.FIELDS))

    @staticmethod
    def concat(parts: list[TopK]) -> TopK:
        return TopK(*(np.concatenate([getattr(p, name) for p in parts]) for name in TopK.FIELDS))


def _as_stored(values: np.ndarray) -> np.ndarray:
    """Round to the float32 the cache stores, so the baseline compared with itself gives exactly zero."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def log_mass_outside(logprobs: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """log(sum of probabilities of every token not in `indices`), per row, computed stably."""
    rest = np.array(logprobs, dtype=np.float32)
    np.put_along_axis(rest, indices.astype(np.int64), -np.inf, axis=1)
    peak = rest.max(axis=1).astype(np.float64)
    finite = np.isfinite(peak)
    safe_peak = np.where(finite, peak, 0.0)
    with np.errstate(divide="ignore"):
        sum_exp = np.exp(rest - safe_peak[:, None].astype(np.float32)).sum(axis=1, dtype=np.float64)
        total = np.log(sum_exp) + safe_peak
    return np.where(finite, total, -np.inf)


def sample_tail(logprobs: np.ndarray, indices: np.ndarray, count: int,
                rng: np.random.Generator) -> np.ndarray:
    """Per row, `count` tokens outside `indices` drawn in proportion to their probability.

    Systematic sampling (evenly spaced points with one random offset per row, over the cumulative
    distribution in token-id order): unbiased for expectations, with less variance than independent draws.
    """
    n_rows, n_vocab = logprobs.shape
    probs = np.exp(np.asarray(logprobs, dtype=np.float32))
    np.put_along_axis(probs, indices.astype(np.int64), 0.0, axis=1)
    cumulative = np.cumsum(probs, axis=1, dtype=np.float64)
    cumulative /= np.maximum(cumulative[:, -1:], np.finfo(np.float64).tiny)
    points = (np.arange(count)[None, :] + rng.random((n_rows, 1))) / count
    # One searchsorted for all rows: shift row r's cumulative values (within [0, 1]) by r.
    shift = np.arange(n_rows)[:, None]
    flat = np.searchsorted((cumulative + shift).ravel(), (points + shift).ravel(), side="right")
    return np.clip(flat.reshape(n_rows, count) - shift * n_vocab, 0, n_vocab - 1).astype(np.int32)


def top_k_summary(logprobs: np.ndarray, targets: np.ndarray, k: int, rng: np.random.Generator) -> TopK:
    """Compress log-prob rows: top k, mass of the rest, k samples of the rest, the true token's log-prob."""
    k = min(k, logprobs.shape[1] - 1)
    part = np.argpartition(-logprobs, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(logprobs, part, axis=1)
    order = np.lexsort((part, -values), axis=1)  # by probability, then token id: deterministic under ties
    indices = np.take_along_axis(part, order, axis=1)
    tail_indices = sample_tail(logprobs, indices, k, rng)
    return TopK(
        indices=indices.astype(np.int32),
        logprobs=np.take_along_axis(values, order, axis=1).astype(np.float32),
        log_tail=log_mass_outside(logprobs, indices).astype(np.float32),
        tail_indices=tail_indices,
        tail_logprobs=np.take_along_axis(logprobs, tail_indices.astype(np.int64), axis=1).astype(np.float32),
        target_logprob=logprobs[np.arange(len(targets)), targets].astype(np.float32),
    )


def kld_from_top_k(base: TopK, logprobs: np.ndarray) -> np.ndarray:
    """KL(baseline || model) per row, estimated from the baseline's compact form and the model's full rows.

    KL = sum over the top k of p (log p - log q)  +  P_tail log(P_tail / Q_tail)  +  P_tail KL(p~ || q~),
    where p~, q~ are both distributions renormalized over the tail; the last term is the mean log-ratio over
    the tail samples (drawn from p~). Without it this is the k+1-bucket lower bound.
    """
    base_lp = base.logprobs.astype(np.float64)
    model_lp = _as_stored(np.take_along_axis(logprobs, base.indices.astype(np.int64), axis=1))
    head = (np.exp(base_lp) * (base_lp - model_lp)).sum(axis=1)
    base_tail = base.log_tail.astype(np.float64)
    model_tail = _as_stored(log_mass_outside(logprobs, base.indices))
    model_samples = _as_stored(np.take_along_axis(logprobs, base.tail_indices.astype(np.int64), axis=1))
    tail_p = np.exp(base_tail)
    with np.errstate(invalid="ignore"):
        within_tail = ((base.tail_logprobs.astype(np.float64) - base_tail[:, None])
                       - (model_samples - model_tail[:, None])).mean(axis=1)
        tail = np.where(tail_p > 0, tail_p * (base_tail - model_tail + within_tail), 0.0)
    return head + tail


def exact_kld(base_logprobs: np.ndarray, logprobs: np.ndarray) -> np.ndarray:
    """KL(baseline || model) per row over the whole vocabulary (for tests of the approximation)."""
    base = np.asarray(base_logprobs, dtype=np.float64)
    return (np.exp(base) * (base - np.asarray(logprobs, dtype=np.float64))).sum(axis=1)


def mean_and_stderr(values: np.ndarray, min_count: int = 2) -> tuple[float, float]:
    """Mean and its standard error as llama-perplexity computes them (0 below min_count values)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    variance = float((values**2).mean() - mean * mean)
    stderr = float(np.sqrt(variance / (n - 1))) if variance > 0 and n >= min_count else 0.0
    return mean, stderr


def perplexity(nll: np.ndarray) -> tuple[float, float]:
    """exp(mean negative log-likelihood) and its standard error (llama-perplexity's 'Final estimate')."""
    mean, stderr = mean_and_stderr(nll)
    ppl = float(np.exp(mean))
    return ppl, ppl * stderr


@dataclass
class Positions:
    """Per scored position: the model's figures, and the comparison with the baseline when there is one."""

    nll: np.ndarray
    kld: np.ndarray | None = None
    same_top: np.ndarray | None = None  # bool: the model's most probable token is the baseline's
    base_nll: np.ndarray | None = None


def comparison_fields(positions: Positions) -> dict[str, float]:
    """The KLD block of llama-perplexity --kl-divergence, as result-row fields."""
    if positions.kld is None or positions.same_top is None or positions.base_nll is None:
        return {}
    kld = positions.kld
    kld_mean, kld_stderr = mean_and_stderr(kld, min_count=11)
    nll = _as_stored(positions.nll)  # the precision the baseline's figures were stored at
    p_diff = np.exp(-nll) - np.exp(-positions.base_nll)
    return {
        "ppl_ratio": float(np.exp(nll.mean() - positions.base_nll.mean())),
        "kld_mean": kld_mean,
        "kld_stderr": kld_stderr,
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),  # linear interpolation, as llama-perplexity's percentile
        "kld_max": float(kld.max()),
        "top1_agreement_pct": 100.0 * float(np.mean(positions.same_top)),
        "dp_correct_mean_pct": 100.0 * float(p_diff.mean()),
        "dp_correct_rms_pct": 100.0 * float(np.sqrt(np.mean(p_diff**2))),
    }


# ================================================================ evaluation text


@dataclass(frozen=True)
class EvalText:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def load_eval_text(reference: str) -> EvalText:
    """`builtin` (English and Chinese prose written for bench) or a path to a UTF-8 text file."""
    path = BUILTIN_TEXT_PATH if reference == BUILTIN_TEXT else Path(reference).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"evaluation text not found: {path} (quality.text: expected `builtin` or a path "
                         "to a UTF-8 text file)") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"evaluation text {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise BenchError(f"cannot read evaluation text {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise BenchError(f"evaluation text {path} is empty: quality needs prose to score (at least "
                         "quality.context tokens; use `builtin` or e.g. wikitext-2's wiki.test.raw)")
    return EvalText(name=reference, text=text)


# ================================================================ baseline cache


@dataclass
class Baseline:
    quantization: str
    tokens: np.ndarray  # int32: the text's tokens that the chunks cover
    top_k: TopK


def file_sha256(path: Path) -> str:
    """SHA-256 of a model file (or of every file of a model folder), remembered by path, size and mtime."""
    from bench.models import cache_dir

    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    memo_path = cache_dir() / "baselines" / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if memo.get(stamp):
        return str(memo[stamp])
    digest = hashlib.sha256()
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    memo[stamp] = digest.hexdigest()
    _atomic_write(memo_path, json.dumps(memo, indent=0).encode())
    return memo[stamp]


def baseline_path(backend: str, model_sha256: str, text_sha256: str, spec: QualitySpec) -> Path:
    """Where a baseline lives: keyed by model file, text, context, top-k and chunk count."""
    from bench.models import cache_dir

    name = (f"{backend}-{model_sha256[:16]}-{text_sha256[:16]}-c{spec.context}-k{spec.top_k}"
            f"-n{spec.max_chunks}.npz")
    return cache_dir() / "baselines" / name


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def save_baseline(path: Path, baseline: Baseline) -> None:
    import io

    buffer = io.BytesIO()
    top = baseline.top_k
    np.savez(buffer, format=np.int32(BASELINE_FORMAT), quantization=np.str_(baseline.quantization),
             tokens=baseline.tokens.astype(np.int32), **{name: getattr(top, name) for name in TopK.FIELDS})
    _atomic_write(path, buffer.getvalue())


def load_baseline(path: Path) -> Baseline:
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["format"]) != BASELINE_FORMAT:
                raise BenchError(f"{path}: baseline cache format {int(data['format'])}, expected "
                                 f"{BASELINE_FORMAT}; delete the file to recompute it")
            return Baseline(quantization=str(data["quantization"]), tokens=data["tokens"],
                            top_k=TopK(*(data[name] for name in TopK.FIELDS)))
    except (OSError, ValueError, KeyError) as exc:
        raise BenchError(f"{path}: unreadable baseline cache ({exc}); delete the file to recompute it") \
            from None


# ================================================================ measuring on a runner


def _blocks(n_rows: int, size: int = ROWS_PER_BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, size):
        yield start, min(start + size, n_rows)


def score_text(runner: Runner, tokens: np.ndarray, n_ctx: int, n_chunks: int, top_k: int,
               baseline: TopK | None = None, summarize: bool = False) -> tuple[Positions, TopK | None]:
    """Evaluate chunk after chunk; compare with `baseline` (rows aligned with scored positions) if given.

    With `summarize`, this model is the baseline being made: its top-k summary is returned too, and each
    block is compared with its own summary (what a later run against the cached baseline reproduces).
    Only one chunk's logits and one block of float64 rows exist at a time.
    """
    bos = runner.bos_token()
    first = first_scored_row(n_ctx)
    per_chunk = scored_per_chunk(n_ctx)
    nll, kld, same, base_nll, summaries = [], [], [], [], []
    rng = np.random.default_rng(TAIL_SAMPLE_SEED)
    for index in range(n_chunks):
        logits = runner.logits(chunk_input(tokens, index, n_ctx, bos))
        targets = chunk_targets(tokens, index, n_ctx)
        for start, stop in _blocks(per_chunk):
            logprobs = log_softmax(logits[first + start:first + stop])
            rows = np.arange(stop - start)
            nll.append(-logprobs[rows, targets[start:stop]])
            if summarize:
                base = top_k_summary(logprobs, targets[start:stop], top_k, rng)
                summaries.append(base)
            elif baseline is not None:
                offset = index * per_chunk
                base = baseline.rows(offset + start, offset + stop)
            if summarize or baseline is not None:
                kld.append(kld_from_top_k(base, logprobs))
                same.append(np.argmax(logprobs, axis=1) == base.indices[:, 0])
                base_nll.append(-base.target_logprob.astype(np.float64))
        del logits
    positions = Positions(nll=np.concatenate(nll))
    if summarize or baseline is not None:
        positions.kld, positions.same_top = np.concatenate(kld), np.concatenate(same)
        positions.base_nll = np.concatenate(base_nll)
    return positions, (TopK.concat(summaries) if summarize else None)


class QualityJob(BaseModel):
    """What a worker needs to measure one model x quantization x backend (JSON over the worker's stdin)."""

    model_config = ConfigDict(frozen=True)

    spec: QualitySpec
    quantization: str
    baseline_quantization: str
    baseline_path: str | None = None  # None: no baseline available (its reason is in `warnings`)
    write_baseline: bool = False  # this job is the baseline and its cache does not exist yet
    text: str
    tasks: list[Task] = []
    warnings: list[str] = []


def measure_quality(runner: Runner, cell: Cell, job: QualityJob) -> dict[str, Any]:
    """Result-row fields for one loaded model: PPL, comparison with the baseline, task accuracy."""
    spec = job.spec
    warnings = list(job.warnings)
    fields: dict[str, Any] = {"baseline_quantization": job.baseline_quantization,
                              "eval_text_sha256": hashlib.sha256(job.text.encode("utf-8")).hexdigest()}
    tokens = runner.tokenize(job.text, add_bos=True)
    n_chunks = chunk_count(len(tokens), spec.context, spec.max_chunks)
    if n_chunks < 1:
        raise BenchError(f"the evaluation text has {len(tokens)} tokens for this model, fewer than "
                         f"quality.context = {spec.context}; use a longer text or a smaller context")
    covered = tokens[:n_chunks * spec.context]
    baseline = _baseline_for(job, covered, warnings)
    runner.prepare_logits(spec.context, cell)
    positions, summary = score_text(runner, tokens, spec.context, n_chunks, spec.top_k,
                                    baseline=baseline.top_k if baseline else None,
                                    summarize=job.write_baseline)
    if summary is not None and job.baseline_path:
        save_baseline(Path(job.baseline_path),
                      Baseline(quantization=job.quantization, tokens=covered, top_k=summary))
    ppl, ppl_stderr = perplexity(positions.nll)
    fields.update(eval_tokens=len(positions.nll), ppl=ppl, ppl_stderr=ppl_stderr)
    fields.update(comparison_fields(positions))
    if job.tasks:
        try:
            fields.update(task_fields(runner, cell, job.tasks))
        except BenchError as exc:
            warnings.append(f"tasks not scored: {exc.message}")
    fields["warnings"] = "; ".join(warnings)
    return fields


def _baseline_for(job: QualityJob, covered: np.ndarray, warnings: list[str]) -> Baseline | None:
    if job.write_baseline or not job.baseline_path:
        return None
    try:
        baseline = load_baseline(Path(job.baseline_path))
    except BenchError as exc:  # PPL and tasks are still worth having
        warnings.append(f"no KLD: {exc.message}")
        return None
    if not np.array_equal(baseline.tokens, covered):
        warnings.append(f"no KLD: this model tokenizes the text differently from the baseline "
                        f"{baseline.quantization}")
        return None
    return baseline


def task_fields(runner: Runner, cell: Cell, tasks: list[Task]) -> dict[str, Any]:
    """Accuracy over every item of the tasks (pooled when there are several)."""
    items: list[ChoiceItem | GenerateItem] = [item for task in tasks for item in task.items]
    runner.prepare_logits(context_for(runner, items), cell)
    correct = score_items(runner, items)
    pct, stderr = accuracy(correct)
    sha = tasks[0].sha256 if len(tasks) == 1 else hashlib.sha256(
        "".join(t.sha256 for t in tasks).encode()).hexdigest()
    return {"task_name": "+".join(t.name for t in tasks), "task_sha256": sha, "task_accuracy_pct": pct,
            "task_accuracy_stderr_pct": stderr, "task_items": len(items)}


# ================================================================ parent side


@dataclass
class QualityOutcome:
    fields: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_quality_worker(backend: str, model_path: Path, cell: Cell, job: QualityJob, timeout_s: float,
                       memory_limit_bytes: int | None = None) -> QualityOutcome:
    """Measure in a child process, like speed cells: a crash, hang or OOM becomes an error, not a dead run."""
    from bench.isolation import Interrupted, describe_exit

    payload = json.dumps({"kind": "quality", "backend": backend, "model_path": str(model_path),
                          "cell": cell.model_dump(), "memory_limit_bytes": memory_limit_bytes,
                          "quality": job.model_dump()})
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [sys.executable, "-m", "bench.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=stderr, start_new_session=True, text=True, encoding="utf-8",
        )
        try:
            stdout, _ = process.communicate(payload, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return QualityOutcome(error=f"quality measurement exceeded its limit of {timeout_s:.0f} s")
        except KeyboardInterrupt:
            _kill_group(process)
            raise Interrupted from None
        for line in stdout.splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "quality_done":
                return QualityOutcome(fields=event["fields"])
            if event.get("event") == "quality_error":
                return QualityOutcome(error=event["reason"])
        stderr.seek(0)
        tail = stderr.read()[-8192:].decode("utf-8", errors="replace")
        return QualityOutcome(error=describe_exit(process.returncode, tail, memory_limit_bytes))


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def precision_rank(quantization: str) -> int:
    return PRECISION_ORDER.index(quantization) if quantization in PRECISION_ORDER else len(PRECISION_ORDER)


def default_baseline(quantizations: list[str]) -> str:
    """The highest-precision quantization (F32 > F16 > BF16 > Q8_0 > ...); the first listed among unknowns."""
    return min(quantizations, key=precision_rank)


def join_quality(fields: dict[str, Any], quality: dict[str, Any]) -> dict[str, Any]:
    """A speed row's fields with the quality columns added; both sets of warnings are kept."""
    joined = {**fields, **{k: v for k, v in quality.items() if k != "warnings"}}
    warnings = [w for w in (fields.get("warnings", ""), quality.get("warnings", "")) if w]
    joined["warnings"] = "; ".join(warnings)
    return joined


class QualityScheduler:
    """Measures quality once per model x quantization x backend for `bench run`, baseline first.

    The text and task files are read when the scheduler is made, so a malformed file stops the run before
    anything is measured.
    """

    def __init__(self, suite: Suite, resolve_model: Callable[[Cell], ResolvedModel],
                 memory_limit_bytes: int | None = None, log: Callable[[str], None] | None = None) -> None:
        self.suite = suite
        self.spec = suite.quality
        self.resolve_model = resolve_model
        self.memory_limit_bytes = memory_limit_bytes
        self.log = log or (lambda message: None)
        self.text = load_eval_text(self.spec.text)
        self.tasks = [load_task(reference).limited(self.spec.task_limit) for reference in self.spec.tasks]
        self.timeout_s = suite.limits.load_timeout_s + suite.limits.cell_timeout_s
        self._results: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._baselines: dict[tuple[str, str], tuple[str, Path | None, str]] = {}
        self._quantizations: dict[tuple[str, str], list[str]] = {}
        self._threads: dict[str, int] = {}  # per device: most threads the suite uses there (0 = all cores)
        for cell in expand(suite):
            quants = self._quantizations.setdefault((cell.model_id, cell.backend), [])
            if cell.quantization not in quants:
                quants.append(cell.quantization)
            if cell.threads is not None:
                known = self._threads.get(cell.device_id)
                most = 0 if 0 in (cell.threads, known) else max(cell.threads, known or 0)
                self._threads[cell.device_id] = most

    def baseline_quantization(self, model_id: str, backend: str) -> str:
        """The suite's `quality.baseline` (`source`: the model file as given), else the highest precision."""
        if self.spec.baseline == SOURCE_QUANT:  # cells name the source by its type (e.g. Q4_1) when known
            return self.suite.model(model_id).source_quantization or SOURCE_QUANT
        measured = self._quantizations.get((model_id, backend), [SOURCE_QUANT])
        return self.spec.baseline or default_baseline(measured)

    def fields_for(self, cell: Cell) -> dict[str, Any]:
        """Quality columns for every row of this cell's model x quantization x backend."""
        key = (cell.model_id, cell.quantization, cell.backend)
        if key not in self._results:
            base_quant, path, reason = self._baseline(cell)
            if key not in self._results:  # the baseline job may just have measured this very key
                is_baseline = cell.quantization == base_quant
                warnings = [] if path else [f"no KLD: baseline {base_quant}: {reason}"]
                write = is_baseline and path is not None and not path.exists()
                self._results[key] = self._measure(cell, base_quant, path, write=write, warnings=warnings)
        return self._results[key]

    def _quality_cell(self, cell: Cell, quantization: str) -> Cell:
        """The cell quality runs with: the given knobs and the most threads the suite uses on its device.

        Quality does not depend on threads; the suite's largest count is one known to suit the machine.
        """
        return cell.model_copy(update={"quantization": quantization,
                                       "threads": self._threads.get(cell.device_id, cell.threads)})

    def _baseline(self, cell: Cell) -> tuple[str, Path | None, str]:
        """(baseline quantization, its cache file or None, why there is none). Measures it if not cached."""
        model_key = (cell.model_id, cell.backend)
        if model_key in self._baselines:
            return self._baselines[model_key]
        base_quant = self.baseline_quantization(cell.model_id, cell.backend)
        base_cell = self._quality_cell(cell, base_quant)
        try:
            resolved = self.resolve_model(base_cell)
            path = baseline_path(cell.backend, file_sha256(resolved.path), self.text.sha256, self.spec)
        except BenchError as exc:
            self._baselines[model_key] = (base_quant, None, exc.message)
            return self._baselines[model_key]
        base_key = (cell.model_id, base_quant, cell.backend)
        if not path.exists():
            fields = self._measure(base_cell, base_quant, path, write=True, warnings=[])
            self._results[base_key] = fields
        reason = "" if path.exists() else (self._results[base_key].get("warnings") or "not measured")
        self._baselines[model_key] = (base_quant, path if path.exists() else None, reason)
        return self._baselines[model_key]

    def _measure(self, cell: Cell, base_quant: str, path: Path | None, write: bool,
                 warnings: list[str]) -> dict[str, Any]:
        label = f"{cell.model_id} {cell.quantization} {cell.backend}"
        self.log(f"quality: {label}" + (" (baseline)" if write else ""))
        try:
            resolved = self.resolve_model(cell)
        except BenchError as exc:
            return {"baseline_quantization": base_quant, "warnings": f"quality not measured: {exc.message}"}
        job = QualityJob(spec=self.spec, quantization=cell.quantization, baseline_quantization=base_quant,
                         baseline_path=str(path) if path else None, write_baseline=write, text=self.text.text,
                         tasks=self.tasks, warnings=warnings)
        outcome = run_quality_worker(cell.backend, resolved.path, self._quality_cell(cell, cell.quantization),
                                     job, self.timeout_s, self.memory_limit_bytes)
        if outcome.error:
            return {"baseline_quantization": base_quant, "warnings": f"quality not measured: {outcome.error}"}
        return outcome.fields


# ================================================================ command line (compare_perplexity.sh)


def standalone_cell(threads: int, context: int) -> Cell:
    return Cell(suite="quality", model_id="model", quantization="source", backend="llamacpp", device_id="cpu",
                device_kind="cpu", device_index=0, threads=threads, n_gpu_layers=0, n_batch=context,
                n_ubatch=min(512, context), flash_attn="auto", kv_cache_type="f16", mmap=True, repack=True,
                torch_compile=None, static_cache=None, prompt_tokens=1, gen_tokens=1, depth=0, repetitions=1,
                warmup=0)


def perplexity_of(model: Path, text: str, context: int, max_chunks: int,
                  threads: int = 0) -> tuple[float, float, int]:
    """(PPL, stderr, scored tokens) of a GGUF model on a text, as `llama-perplexity -c context --chunks n`."""
    from bench.runners.llamacpp import LlamaCppRunner

    cell = standalone_cell(threads, context)
    runner = LlamaCppRunner(model, cell)
    runner.load()
    try:
        tokens = runner.tokenize(text, add_bos=True)
        n_chunks = chunk_count(len(tokens), context, max_chunks)
        if n_chunks < 1:
            raise BenchError(f"the text has {len(tokens)} tokens, fewer than the context of {context}")
        runner.prepare_logits(context, cell)
        positions, _ = score_text(runner, tokens, context, n_chunks, top_k=1)
    finally:
        runner.close()
    ppl, stderr = perplexity(positions.nll)
    return ppl, stderr, len(positions.nll)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.quality",
                                     description="Perplexity of a GGUF model, measured as llama-perplexity "
                                                 "does.")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--text", default=BUILTIN_TEXT, help="`builtin` or a UTF-8 text file")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0 = all physical cores")
    args = parser.parse_args(argv)
    try:
        text = load_eval_text(args.text).text
        ppl, stderr, count = perplexity_of(args.model, text, args.context, args.chunks, args.threads)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"PPL = {ppl:.4f} +/- {stderr:.5f} ({count} tokens scored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

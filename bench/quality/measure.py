"""The worker side of quality: on one loaded model, perplexity, the comparison with the baseline, task accuracy.

Logits are processed one chunk at a time, in blocks of rows, so memory is bounded by the context size, never by
the length of the text. `measure_quality` runs inside a worker process (bench.worker); `perplexity_of` is the
same measurement for one GGUF file outside any suite (`python -m bench.quality`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from bench.errors import BenchError
from bench.quality.baseline import Baseline, load_baseline, save_baseline
from bench.quality.model import QualityModel, quality_skip_reason
from bench.quality.numerics import (
    KldRows,
    Positions,
    TopK,
    chunk_count,
    chunk_input,
    chunk_targets,
    comparison_fields,
    first_scored_row,
    kld_estimates,
    log_softmax,
    perplexity,
    same_top_token,
    scored_per_chunk,
    top_k_summary,
)
from bench.quality.tasks import ChoiceItem, GenerateItem, Task, accuracy, context_for, score_items
from bench.runners.registry import create_engine, default_backend
from bench.suite import KNOBS, SOURCE_QUANT, Cell, QualitySpec

ROWS_PER_BLOCK = 64  # logit rows turned into float64 log-probs at once: bounds memory for big vocabularies
TAIL_SAMPLE_SEED = 20240601  # the baseline's tail samples are reproducible


def _blocks(n_rows: int, size: int = ROWS_PER_BLOCK) -> Iterator[tuple[int, int]]:
    for start in range(0, n_rows, size):
        yield start, min(start + size, n_rows)


def score_text(
    model: QualityModel,
    tokens: np.ndarray,
    n_ctx: int,
    n_chunks: int,
    top_k: int,
    baseline: TopK | None = None,
    summarize: bool = False,
) -> tuple[Positions, TopK | None]:
    """Evaluate chunk after chunk; compare with `baseline` (rows aligned with scored positions) if given.

    With `summarize`, this model is the baseline being made: its top-k summary is returned too, and each
    block is compared with its own summary (what a later run against the cached baseline reproduces).
    Only one chunk's logits and one block of float64 rows exist at a time.
    """
    bos = model.bos_token()
    first = first_scored_row(n_ctx)
    per_chunk = scored_per_chunk(n_ctx)
    compare = summarize or baseline is not None
    nll: list[np.ndarray] = []
    klds: list[KldRows] = []
    same: list[np.ndarray] = []
    base_nll: list[np.ndarray] = []
    summaries: list[TopK] = []
    rng = np.random.default_rng(TAIL_SAMPLE_SEED)
    for index in range(n_chunks):
        logits = model.logits(chunk_input(tokens, index, n_ctx, bos))
        targets = chunk_targets(tokens, index, n_ctx)
        for start, stop in _blocks(per_chunk):
            logprobs = log_softmax(logits[first + start : first + stop])
            nll.append(-logprobs[np.arange(stop - start), targets[start:stop]])
            if summarize:
                base = top_k_summary(logprobs, targets[start:stop], top_k, rng)
                summaries.append(base)
            elif baseline is not None:
                offset = index * per_chunk
                base = baseline.rows(offset + start, offset + stop)
            else:
                continue
            klds.append(kld_estimates(base, logprobs))
            same.append(same_top_token(base, logprobs))
            base_nll.append(-base.target_logprob.astype(np.float64))
        del logits
    positions = Positions(nll=np.concatenate(nll))
    if compare:
        positions.kld = KldRows(
            unbiased=np.concatenate([k.unbiased for k in klds]), bucketed=np.concatenate([k.bucketed for k in klds])
        )
        positions.same_top, positions.base_nll = np.concatenate(same), np.concatenate(base_nll)
    return positions, (TopK.concat(summaries) if summarize else None)


class QualityJob(BaseModel):
    """What a worker needs to measure one quality key (JSON over the worker's stdin)."""

    model_config = ConfigDict(frozen=True)

    spec: QualitySpec
    quantization: str
    baseline_quantization: str
    baseline_path: str | None = None  # None: no baseline available (its reason is in `warnings`)
    write_baseline: bool = False  # this job is the baseline and its cache does not exist yet
    text: str
    tasks: list[Task] = []
    warnings: list[str] = []


def measure_quality(model: QualityModel, cell: Cell, job: QualityJob) -> dict[str, Any]:
    """Result-row fields for one loaded model: PPL, comparison with the baseline, task accuracy."""
    skip = quality_skip_reason(cell.backend, model)
    if skip:
        raise BenchError(skip)
    spec = job.spec
    warnings = list(job.warnings)
    fields: dict[str, Any] = {
        "baseline_quantization": job.baseline_quantization,
        "eval_text_sha256": hashlib.sha256(job.text.encode("utf-8")).hexdigest(),
    }
    tokens = model.tokenize(job.text, add_bos=True)
    n_chunks = chunk_count(len(tokens), spec.context, spec.max_chunks)
    if n_chunks < 1:
        raise BenchError(
            f"the evaluation text has {len(tokens)} tokens for this model, fewer than "
            f"quality.context = {spec.context}; use a longer text or a smaller context"
        )
    covered = tokens[: n_chunks * spec.context]
    baseline = _baseline_for(job, covered, warnings)
    model.prepare_logits(spec.context, cell)
    positions, summary = score_text(
        model,
        tokens,
        spec.context,
        n_chunks,
        spec.top_k,
        baseline=baseline.top_k if baseline else None,
        summarize=job.write_baseline,
    )
    if summary is not None and job.baseline_path:
        save_baseline(Path(job.baseline_path), Baseline(quantization=job.quantization, tokens=covered, top_k=summary))
    ppl, ppl_stderr = perplexity(positions.nll)
    fields.update(eval_tokens=len(positions.nll), ppl=ppl, ppl_stderr=ppl_stderr)
    fields.update(comparison_fields(positions))
    if job.tasks:
        try:
            fields.update(task_fields(model, cell, job.tasks))
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
        warnings.append(f"no KLD: this model tokenizes the text differently from the baseline {baseline.quantization}")
        return None
    return baseline


def task_fields(model: QualityModel, cell: Cell, tasks: list[Task]) -> dict[str, Any]:
    """Accuracy over every item of the tasks (pooled when there are several)."""
    items: list[ChoiceItem | GenerateItem] = [item for task in tasks for item in task.items]
    model.prepare_logits(context_for(model, items), cell)
    correct = score_items(model, items)
    pct, stderr = accuracy(correct)
    sha = tasks[0].sha256 if len(tasks) == 1 else hashlib.sha256("".join(t.sha256 for t in tasks).encode()).hexdigest()
    return {
        "task_name": "+".join(t.name for t in tasks),
        "task_sha256": sha,
        "task_accuracy_pct": pct,
        "task_accuracy_stderr_pct": stderr,
        "task_items": len(items),
    }


# ---------------------------------------------------------------- one GGUF file, outside a suite


def standalone_cell(threads: int, context: int, backend_name: str = "") -> Cell:
    """A CPU cell of the default backend for scoring one model file outside a suite (batches of the whole
    context, where the backend takes batch knobs)."""
    name = backend_name or default_backend()
    batches = {"n_batch": context, "n_ubatch": min(512, context)}
    return Cell(
        model_id="model",
        quantization=SOURCE_QUANT,
        backend=name,
        device_id="cpu",
        device_kind="cpu",
        prompt_tokens=1,
        gen_tokens=1,
        repetitions=1,
        warmup=0,
        threads=threads,
        **{knob: value for knob, value in batches.items() if knob in KNOBS and KNOBS[knob].takes(name)},
    )


def perplexity_of(model: Path, text: str, context: int, max_chunks: int, threads: int = 0) -> tuple[float, float, int]:
    """(PPL, stderr, scored tokens) of a model file on a text with the default backend, as
    `llama-perplexity -c context --chunks n` does for a GGUF file."""
    cell = standalone_cell(threads, context)
    runner: Any = create_engine(cell.backend, model, cell)  # a backend that gives logits (QualityModel)
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

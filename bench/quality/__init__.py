"""Quality of a quantization: perplexity, KL divergence and top-token agreement vs a baseline, task accuracy.

    numerics   pure functions: log-softmax, perplexity, chunking, the baseline's compact form, KLD estimators
    text       the evaluation text (built-in prose or a UTF-8 file)
    tasks      task files and their scoring (docs/tasks.md)
    model      QualityModel: what quality needs from a loaded model; backends without logits skip quality
    baseline   the baseline cache on disk
    measure    the worker side: one loaded model's figures
    scheduler  the parent side: one measurement per quality key (Cell.quality_key), baseline first

The names below are what the rest of bench imports from `bench.quality`.
"""

from __future__ import annotations

from bench.quality.baseline import Baseline, baseline_path, load_baseline, save_baseline
from bench.quality.measure import QualityJob, measure_quality, perplexity_of, score_text, standalone_cell
from bench.quality.model import QualityModel, quality_skip_reason, supports_quality
from bench.quality.numerics import (
    KldRows,
    Positions,
    TopK,
    chunk_count,
    chunk_input,
    chunk_targets,
    comparison_fields,
    exact_kld,
    kld_estimates,
    log_softmax,
    mean_and_stderr,
    perplexity,
    sample_tail,
    scored_per_chunk,
    top_k_summary,
)
from bench.quality.scheduler import QualityScheduler, default_baseline, join_quality, logits_fields
from bench.quality.text import BUILTIN_TEXT, BUILTIN_TEXT_PATH, EvalText, load_eval_text

__all__ = [
    "BUILTIN_TEXT",
    "BUILTIN_TEXT_PATH",
    "Baseline",
    "EvalText",
    "KldRows",
    "Positions",
    "QualityJob",
    "QualityModel",
    "QualityScheduler",
    "TopK",
    "baseline_path",
    "chunk_count",
    "chunk_input",
    "chunk_targets",
    "comparison_fields",
    "default_baseline",
    "exact_kld",
    "join_quality",
    "kld_estimates",
    "load_baseline",
    "load_eval_text",
    "log_softmax",
    "logits_fields",
    "mean_and_stderr",
    "measure_quality",
    "perplexity",
    "perplexity_of",
    "quality_skip_reason",
    "sample_tail",
    "save_baseline",
    "score_text",
    "scored_per_chunk",
    "standalone_cell",
    "supports_quality",
    "top_k_summary",
]

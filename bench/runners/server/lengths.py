"""Request lengths drawn from a distribution (the `prompt_lengths` and `output_lengths` knobs; pure, seeded).

  fixed (default, "")     every request the workload's length (prompt_tokens, gen_tokens)
  uniform:LO:HI           whole tokens, uniform in [LO, HI]
  normal:MEAN:SD          rounded, at least 1
  empirical:A,B,C,...     drawn with replacement from these lengths (e.g. a dataset's histogram)
  mlperf-deepseek-r1      outputs only: a lognormal (sigma 1) with MLPerf's DeepSeek-R1 reference mean of 4,043
                          output tokens, cut at its maximum of 32,768, then scaled by budget / 32,768 (the budget
                          is gen_tokens). MLPerf states the mean and the cap; the lognormal's shape is bench's
                          assumption, not the dataset's own histogram.
  reasoning               outputs only: the model is free to stop (no ignore_eos / min_tokens) within the budget,
                          so a reasoning model thinks, then answers, then ends; answers cut at the budget count as
                          truncated, and the time to the first answer token shows the thinking phase

Every length is cut to [1, budget]: the budget (the workload's length) sizes the server's context.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEEPSEEK_R1_MEAN = 4043  # MLPerf Inference's DeepSeek-R1 reference: mean output tokens
DEEPSEEK_R1_MAX = 32768  # and its maximum (max_tokens)
DEEPSEEK_R1_SIGMA = 1.0
KINDS = ("fixed", "uniform", "normal", "empirical", "mlperf-deepseek-r1", "reasoning")
FREE_TO_STOP = "reasoning"  # the preset whose answers are not held to a length


def _numbers(text: str, sep: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(sep) if v.strip()]
    except ValueError:
        raise ValueError(f"expected numbers separated by {sep!r} (got {text!r})") from None
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise ValueError(f"expected numbers >= 0 (got {text!r})")
    return values


def _parts(stored: str) -> tuple[str, str]:
    kind, _, rest = stored.strip().lower().partition(":")
    if kind not in KINDS:
        raise ValueError(f"expected one of {', '.join(KINDS)} (e.g. 'uniform:64:512')")
    return kind, rest


def check_lengths(value: Any) -> str:
    if value in ("", None):
        return ""
    try:
        kind, rest = _parts(str(value))
        if kind == "uniform":
            low, high = _numbers(rest, ":")
            if low > high:
                return f"uniform needs LO <= HI (got {rest!r})"
        elif kind == "normal":
            _numbers(rest, ":")[1]  # noqa: B018 - both given
        elif kind == "empirical":
            _numbers(rest, ",")
        elif rest:
            return f"{kind} takes no parameters (got {rest!r})"
    except (ValueError, IndexError) as exc:
        return str(exc) if isinstance(exc, ValueError) else f"{value!r} needs two numbers"
    return ""


def draw_lengths(spec: str, budget: int, count: int, seed: int) -> list[int]:
    """`count` lengths of the distribution `spec`, each in [1, budget], the same for the same seed."""
    if not spec or spec in ("fixed", FREE_TO_STOP):
        return [budget] * count
    kind, rest = _parts(spec)
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        low, high = _numbers(rest, ":")
        values = rng.integers(int(low), int(high) + 1, size=count).astype(float)
    elif kind == "normal":
        mean, sd = _numbers(rest, ":")[:2]
        values = rng.normal(mean, sd, size=count)
    elif kind == "empirical":
        values = rng.choice(np.array(_numbers(rest, ",")), size=count)
    else:  # mlperf-deepseek-r1
        mu = np.log(DEEPSEEK_R1_MEAN) - DEEPSEEK_R1_SIGMA**2 / 2  # the lognormal's mean is exp(mu + sigma^2 / 2)
        values = np.minimum(rng.lognormal(mu, DEEPSEEK_R1_SIGMA, size=count), DEEPSEEK_R1_MAX)
        values = values * budget / DEEPSEEK_R1_MAX
    return [int(v) for v in np.clip(np.rint(values), 1, budget)]

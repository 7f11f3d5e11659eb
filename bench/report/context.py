"""The largest context each configuration fits, from the memory planner (bench.planner).

The planner answers per result row: `max_context_for_row(row) -> (tokens or None, basis)`, the basis
saying whether the number is estimated or measured. It is asked once per memory-relevant setup
(threads do not change memory), not once per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError

CONTEXT_MARKS = (4096, 32768, 131072)  # 4K chat, 32K long documents, 128K reasoning traces
MEMORY_SETUP = (
    "host",
    "device_id",
    "backend",
    "model_id",
    "quantization",
    "n_gpu_layers",
    "kv_cache_type",
    "flash_attn",
    "n_batch",
    "n_ubatch",
)
PLANNER_MISSING = "the memory planner (bench.planner) is not part of this installation"


def planner() -> Callable[[Any], tuple[int | None, str]] | None:
    try:
        from bench.planner import max_context_for_row
    except ModuleNotFoundError as exc:
        if exc.name == "bench.planner":
            return None
        raise
    except ImportError:  # the module is there without this function (an older or newer planner)
        return None
    return max_context_for_row


def add_context_fits(configs: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Columns max_context (tokens, NaN unknown) and context_basis; False when there is no planner."""
    out = configs.copy()
    out["max_context"] = np.nan
    out["context_basis"] = ""
    ask = planner()
    if ask is None or out.empty:
        return out, ask is not None
    setup_no = out.groupby(list(MEMORY_SETUP), dropna=False, sort=False).ngroup()
    representatives = out.loc[~setup_no.duplicated()]
    answers: dict[int, tuple[float, str]] = {}
    for number, (_, row) in zip(setup_no[representatives.index], representatives.iterrows(), strict=True):
        try:
            tokens, basis = ask(row)
        except BenchError as exc:
            tokens, basis = None, str(exc)
        answers[int(number)] = (np.nan if tokens is None else float(tokens), str(basis))
    out["max_context"] = setup_no.map(lambda n: answers[n][0]).astype(float)
    out["context_basis"] = setup_no.map(lambda n: answers[n][1]).astype(object)
    return out, True

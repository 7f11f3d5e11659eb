"""The largest context each configuration fits: what memory allows (the backend's memory planner) and what the
model supports (its trained context, or the RoPE-scaled limit its GGUF declares), kept apart.

A backend with a memory planner answers per result row through the registry (`max_context_for_row(row) ->
(tokens or None, basis)`). It is asked once per memory-relevant setup (knobs the registry marks `memory`;
threads do not change memory), not once per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.report import format as fmt
from bench.runners.registry import BACKENDS
from bench.suite.knobs import memory_knobs

CONTEXT_MARKS = (4096, 32768, 131072)  # 4K chat, 32K long documents, 128K reasoning traces


def memory_setup() -> list[str]:
    """The columns that decide a configuration's memory: where it runs, what it loads, the memory knobs."""
    return ["host", "device_id", "backend", "model_id", "quantization", *memory_knobs()]


class _Row(Mapping[str, Any]):
    """One row of a frame as a read-only mapping over its column arrays: nothing is copied or boxed until a
    planner reads a value (to_dict("records") over a wide frame costs more than every answer together)."""

    def __init__(self, columns: dict[str, np.ndarray], position: int) -> None:
        self._columns, self._position = columns, position

    def __getitem__(self, key: str) -> Any:
        return self._columns[key][self._position]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)


def _ask(row: Mapping[str, Any]) -> tuple[float, str]:
    name = str(row.get("backend") or "")
    spec = BACKENDS.get(name)
    if spec is None:
        return np.nan, f"backend {name or '(none)'} is not known to this bench"
    if spec.max_context_for_row is None:
        return np.nan, f"the {name} backend has no memory planner"
    try:
        tokens, basis = spec.max_context_for_row(row)
    except BenchError as exc:
        return np.nan, exc.message
    return (np.nan if tokens is None else float(tokens)), str(basis)


def model_context(frame: pd.DataFrame) -> pd.Series:
    """The context the model supports: its RoPE-scaled limit when its GGUF declares one, else its trained one."""
    trained = fmt.as_float(frame["n_ctx_train"])
    if "n_ctx_rope_scaled" not in frame:
        return trained
    scaled = fmt.as_float(frame["n_ctx_rope_scaled"])
    return scaled.where(scaled > trained.fillna(0), trained)


def add_context_fits(configs: pd.DataFrame) -> pd.DataFrame:
    """Columns max_context (what memory allows one sequence: the backend's answer per sequence at the row's
    `parallel`, following its memory knobs, e.g. swa_full; tokens, NaN unknown), context_basis, model_context (what the model supports) and
    usable_context (the smaller of the two)."""
    out = configs.copy()
    out["max_context"] = np.nan
    out["context_basis"] = ""
    out["model_context"] = model_context(out) if not out.empty else np.nan
    if not out.empty:
        setup_no = out.groupby(memory_setup(), dropna=False, sort=False).ngroup().to_numpy()
        first = np.flatnonzero(~pd.Series(setup_no).duplicated().to_numpy())
        columns = {name: out[name].to_numpy() for name in out.columns}
        answers = [_ask(_Row(columns, int(position))) for position in first]
        tokens = np.empty(setup_no.max() + 1)
        bases = np.empty(setup_no.max() + 1, dtype=object)
        tokens[setup_no[first]] = [a[0] for a in answers]
        bases[setup_no[first]] = [a[1] for a in answers]
        out["max_context"] = tokens[setup_no]
        out["context_basis"] = bases[setup_no]
    out["usable_context"] = out["max_context"].where(~(out["max_context"] > out["model_context"]), out["model_context"])
    return out

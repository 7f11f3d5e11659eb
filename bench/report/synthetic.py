"""Synthetic weights in the report: their rows are marked next to the model name, and the method says what
they show (speed and memory of the model's shape and weight types) and what they do not (quality).

Synthetic rows (`weights` = synthetic, bench.models.weights) have the shape and weight types of the model they
name with random values: their quality columns are empty (never measured on noise), and a model's marked name
keeps them apart from its real rows in every table and front.
"""

from __future__ import annotations

import pandas as pd

from bench.report.document import Paragraph

SYNTHETIC_MARK = "ˢ"
# Synthetic vs real agreement, as README states it (tests/benchmarks/test_synthetic_speed.py, tests/test_synthetic.py).
MEASURED_AGREEMENT = (
    "prefill and decode tok/s within 4.3 %, peak memory within 0.6 % and file size within 0.3 % "
    "(SmolLM2-135M Q8_0 and Gemma-3-270M Q4_K_M on an x86 CPU)"
)


def is_synthetic(rows: pd.DataFrame) -> pd.Series:
    """Rows measured on synthetic weights (an older CSV has no `weights` column: real weights)."""
    if "weights" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows["weights"].astype(str).eq("synthetic")


def mark_synthetic_models(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with `ˢ` after the model name of each synthetic row."""
    synthetic = is_synthetic(rows)
    if not synthetic.any():
        return rows
    out = rows.copy()
    out.loc[synthetic, "model_id"] = out.loc[synthetic, "model_id"].astype(str) + " " + SYNTHETIC_MARK
    return out


def method_note(rows: pd.DataFrame) -> list[Paragraph]:
    """The method's sentence on synthetic weights, when the report has synthetic rows."""
    if not is_synthetic(rows).any():
        return []
    agreement = (
        f" Measured against real weights of the same models: {MEASURED_AGREEMENT}." if MEASURED_AGREEMENT else ""
    )
    return [
        Paragraph.of(
            f"{SYNTHETIC_MARK} synthetic weights: the named model's exact shape and weight types with random "
            "values, so those rows show the speed and memory of that shape and quantization, not its quality "
            "(not measured on them: random weights have no quality to lose)." + agreement
        )
    ]

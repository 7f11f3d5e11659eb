"""The baseline quality is measured against, named in every quality header ("KLD vs Q8_0"), and what a quantized
baseline means: the loss shown is against it, so the loss against the original weights is at least that."""

from __future__ import annotations

import pandas as pd

UNQUANTIZED = frozenset({"F32", "F16", "BF16"})  # a baseline of these is the original weights (or as good)
LOSS_LABELS = {"kld": "KLD vs {}", "dppl": "ΔPPL vs {} (%)"}


def baselines(frame: pd.DataFrame) -> list[str]:
    """The distinct baseline quantizations of the rows (sorted; none when quality was not measured)."""
    if "baseline_quantization" not in frame:
        return []
    names = frame["baseline_quantization"].astype(object).where(frame["baseline_quantization"].notna(), "")
    return sorted({str(n) for n in names if str(n)})


def against(frame: pd.DataFrame) -> str:
    """'Q8_0', or 'each model's baseline (F16, Q8_0)' when they differ, or 'the baseline' when none is recorded."""
    names = baselines(frame)
    if len(names) == 1:
        return names[0]
    return f"each model's baseline ({', '.join(names)})" if names else "the baseline"


def loss_label(metric: str, frame: pd.DataFrame) -> str:
    """The header of a quality-loss column: 'KLD vs Q8_0', 'ΔPPL vs Q8_0 (%)'."""
    return LOSS_LABELS[metric].format(against(frame))


def lower_bound_note(frame: pd.DataFrame) -> str:
    """A sentence when a baseline is itself quantized ('' otherwise)."""
    quantized = [name for name in baselines(frame) if name.upper() not in UNQUANTIZED]
    if not quantized:
        return ""
    names = ", ".join(quantized)
    return (
        f"The quality baseline {names} is itself quantized: each loss is measured against it (so {names} shows "
        "none), and the loss against the original weights is at least as large — a lower bound."
    )

"""`--metrics A,B`, as `bench compare` and `bench trend` take it: names from the shared metric vocabulary."""

from __future__ import annotations

from bench.compare.metrics import METRICS_BY_NAME
from bench.errors import BenchError


def parse_metrics(text: str | None) -> tuple[str, ...]:
    """The chosen metric names, all of them when not given; BenchError naming any unknown one."""
    if not text:
        return tuple(METRICS_BY_NAME)
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS_BY_NAME]
    if unknown or not names:
        raise BenchError(f"--metrics {text!r}: unknown metric(s) {unknown}; known: {', '.join(METRICS_BY_NAME)}")
    return names

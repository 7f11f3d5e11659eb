"""Capacity search (pure: the probes are a callable): the largest arrival rate whose TTFT and time per output
token at the SLO's percentile (p99 for MLPerf's presets) meet its limits, by bisection between measured rates.

The ceiling is the server's throughput (every request at once): above it no rate is sustainable. The search
probes the ceiling; if that fails, it bisects [0, ceiling] until the bracket (highest rate that met, lowest
that failed) is no wider than `resolution_rps`, `max_probes` probes were spent, or the next rate is below
`floor_rps` (the row then says the bracket it reached). Each probe is one bounded load point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

RESOLUTION_FRACTION = 0.05  # default resolution: 5 % of the throughput ceiling
MAX_PROBES = 10  # 1 ceiling probe + bisection steps (0.05 needs 5)


@dataclass(frozen=True)
class Limits:
    """An SLO's limits in ms at its percentile (None: not limited)."""

    ttft_ms: float | None
    tpot_ms: float | None


@dataclass
class Probe:
    """One measured rate: its TTFT and TPOT (ms) at the SLO's percentile, its errors, and its row's fields."""

    rate_rps: float
    ttft_ms: float | None
    tpot_ms: float | None
    errors: int = 0
    fields: dict[str, Any] = field(default_factory=dict)

    def broken(self, limits: Limits) -> str:
        """The limits this probe broke, e.g. 'ttft' or 'ttft+tpot' ('' when it met all); a probe without
        figures breaks 'no ttft' / 'no tpot', one with failed or incomplete requests 'errors'."""
        broke = ["errors"] if self.errors else []
        for name, value, limit in (
            ("ttft", self.ttft_ms, limits.ttft_ms),
            ("tpot", self.tpot_ms, limits.tpot_ms),
        ):
            if limit is not None and value is None:
                broke.append(f"no {name}")  # nothing measured proves the limit held
            elif limit is not None and value is not None and value > limit:
                broke.append(name)
        return "+".join(broke)


@dataclass
class Capacity:
    rate_rps: float  # the highest probed rate that met the SLO (0: none did)
    resolution_rps: float  # the final bracket's width: the true capacity lies in [rate, rate + resolution)
    binding: str  # what the lowest failing rate broke ('' when the ceiling itself met the SLO)
    probes: list[Probe]
    met: Probe | None  # the probe at rate_rps

    def probes_text(self) -> str:
        def ms(value: float | None) -> str:
            return "" if value is None else f"{value:.1f}"

        return ";".join(f"{p.rate_rps:.4g}:{ms(p.ttft_ms)}/{ms(p.tpot_ms)}" for p in self.probes)


def search_capacity(
    probe: Callable[[float], Probe],
    ceiling_rps: float,
    limits: Limits,
    resolution_rps: float,
    max_probes: int = MAX_PROBES,
    floor_rps: float = 0.0,
) -> Capacity:
    """Bisection between the highest rate that met the limits and the lowest that broke them, never probing
    below `floor_rps` (a bounded probe sends too few requests there to measure)."""
    if ceiling_rps <= 0 or resolution_rps <= 0:
        raise ValueError("the ceiling and the resolution must be > 0")
    probes = [probe(ceiling_rps)]
    if not probes[0].broken(limits):
        return Capacity(ceiling_rps, 0.0, "", probes, probes[0])
    low, high, met, binding = 0.0, ceiling_rps, None, probes[0].broken(limits)
    while high - low > resolution_rps and len(probes) < max_probes and (low + high) / 2.0 >= floor_rps:
        result = probe((low + high) / 2.0)
        probes.append(result)
        broke = result.broken(limits)
        if broke:
            high, binding = result.rate_rps, broke
        else:
            low, met = result.rate_rps, result
    return Capacity(low, high - low, binding, probes, met)

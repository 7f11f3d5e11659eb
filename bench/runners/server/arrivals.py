"""Load profiles (the `load` knob) and the send schedules they make (pure: no network, no clock).

A suite writes a profile as a mapping or as text; the knob stores one canonical text per matrix point:

  (default, "")     closed loop: `parallel` users, each sending when its previous request ended (issue 24)
  concurrency: N    closed loop with N users (the server keeps `parallel` slots)
  rate: R           open loop, one request every 1/R s
  poisson: R        open loop, exponential gaps of mean 1/R s, seeded (the same seed gives the same gaps)
  sweep: K          K points, as GuideLLM's sweep: synchronous (one request at a time: the lowest rate), throughput
                    (every request at once: the highest), then K-2 constant rates spread up to that highest
  capacity: PRESET  the largest rate meeting an SLO preset's p99 TTFT and TPOT, by bisection (capacity_search)
  capacity          the same under the suite's `slo` (its limits at its percentile)

A sweep is expanded into its points ("sweep:5/1" ... "sweep:5/5"), one cell and one row each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

OPEN_KINDS = ("rate", "poisson")
KINDS = ("concurrency", *OPEN_KINDS, "sweep", "capacity")
SWEEP_MIN_POINTS = 2  # synchronous and throughput; each point beyond adds one rate between them
SWEEP_MAX_POINTS = 50
_TEXT = re.compile(r"^\s*([a-z]+)\s*[:= ]\s*([^\s/]+)\s*(?:/\s*(\d+))?\s*$")


@dataclass(frozen=True)
class LoadProfile:
    """One load point's profile. kind '' is the default closed loop; `point` is a sweep's 1-based point."""

    kind: str = ""
    value: float = 0.0  # users (concurrency), requests/s (rate, poisson), points (sweep)
    point: int = 0
    preset: str = ""  # capacity: the SLO preset whose limits it searches under ('': the suite's slo)

    @property
    def sweep_role(self) -> str:
        """A sweep point's role: synchronous, throughput, or rate."""
        if self.kind != "sweep":
            return ""
        return {1: "synchronous", 2: "throughput"}.get(self.point, "rate")

    @property
    def text(self) -> str:
        if not self.kind:
            return ""
        if self.kind == "capacity":
            return f"capacity:{self.preset}" if self.preset else "capacity"
        value = f"{self.value:g}"
        return f"sweep:{value}/{self.point}" if self.kind == "sweep" and self.point else f"{self.kind}:{value}"


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) and value > 0 else None


def profile_of(stored: str) -> LoadProfile:
    """The profile of a canonical (or suite-written) text; raises ValueError saying what was expected."""
    if not stored:
        return LoadProfile()
    if stored.strip().lower() == "capacity":
        return LoadProfile("capacity")
    found = _TEXT.match(stored.lower())
    if not found or found.group(1) not in KINDS:
        raise ValueError(
            f"expected one of {', '.join(KINDS)} with a value, e.g. 'poisson: 2' (capacity alone: the suite's slo)"
        )
    kind, raw, point = found.group(1), found.group(2), int(found.group(3) or 0)
    if kind == "capacity":
        # Imported here: this module is imported while bench.suite is still loading (the knob registry).
        from bench.suite.schema import SLO_PRESETS

        if raw not in SLO_PRESETS:
            raise ValueError(
                f"capacity takes an SLO preset: one of {', '.join(SLO_PRESETS)} (or none: the suite's slo)"
            )
        return LoadProfile(kind, preset=raw)
    value = _number(raw)
    if value is None:
        raise ValueError(f"{kind} needs a number > 0 (got {raw!r})")
    if kind in ("concurrency", "sweep") and value != int(value):
        raise ValueError(f"{kind} needs a whole number (got {raw!r})")
    if kind == "sweep" and not SWEEP_MIN_POINTS <= value <= SWEEP_MAX_POINTS:
        raise ValueError(f"sweep needs {SWEEP_MIN_POINTS} to {SWEEP_MAX_POINTS} points (got {raw})")
    if point and (kind != "sweep" or point > value):
        raise ValueError(f"a point /{point} only exists in a sweep of at least that many points")
    return LoadProfile(kind, value, point)


def parse_load(value: Any) -> Any:
    """Suite value -> stored text: {poisson: 2} or 'poisson: 2' -> 'poisson:2'. What cannot be read is returned
    as given, for check_load to name."""
    if isinstance(value, dict) and len(value) == 1:
        ((kind, amount),) = value.items()
        value = str(kind) if amount is None else f"{kind}:{amount}"  # {capacity: null}: the suite's slo
    if not isinstance(value, str):
        return value
    try:
        return profile_of(value).text
    except ValueError:
        return value


def check_load(value: Any) -> str:
    try:
        profile_of(value)
    except ValueError as exc:
        return str(exc)
    return ""


def expand_load(value: Any) -> tuple[Any, ...]:
    """A sweep of K points stands for K cells ('sweep:K/1' ... 'sweep:K/K'); every other profile for itself."""
    try:
        profile = profile_of(value) if isinstance(value, str) else None
    except ValueError:
        return (value,)
    if profile is None or profile.kind != "sweep" or profile.point:
        return (value,)
    return tuple(LoadProfile("sweep", profile.value, p).text for p in range(1, int(profile.value) + 1))


def show_load(value: Any) -> str:
    """Short text for tables: 'c4', 'r2/s', 'poisson 2/s', 'sweep 3 of 5', 'capacity (preset)'."""
    try:
        profile = profile_of(value)
    except ValueError:
        return str(value)
    if profile.kind == "sweep" and profile.point:
        return f"sweep {profile.point} of {profile.value:g}"
    return {
        "concurrency": f"c{profile.value:g}",
        "rate": f"r{profile.value:g}/s",
        "poisson": f"poisson {profile.value:g}/s",
        "capacity": f"capacity ({profile.preset or 'suite slo'})",
    }.get(profile.kind, profile.text)


def send_offsets(kind: str, rate: float, count: int, duration_s: float, seed: int) -> np.ndarray:
    """Intended send times (s after the start) of at most `count` requests within `duration_s`: constant gaps
    of 1/rate, exponential gaps of mean 1/rate drawn from `seed`, or every request at 0 ('throughput')."""
    if kind == "throughput":
        return np.zeros(count)
    if kind == "rate":
        offsets = np.arange(count) / rate
    elif kind == "poisson":
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=count)
        offsets = np.concatenate(([0.0], np.cumsum(gaps[:-1])))
    else:
        raise ValueError(f"no open-loop schedule for {kind!r}")
    return offsets[offsets < duration_s]


def sweep_rates(lowest_rps: float, highest_rps: float, points: int) -> list[float]:
    """The constant rates of a sweep's points 3..K, as GuideLLM's SweepProfile: linspace(lowest, highest, K-1)
    without its first value (so the last rate point offers the throughput point's rate)."""
    return [float(r) for r in np.linspace(lowest_rps, highest_rps, points - 1)[1:]]

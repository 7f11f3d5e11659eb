"""Sustained mode (workload.sustain_s): after a cell's measured repetitions, keep decoding for sustain_s and
record the speed per window with the machine's state at each window's end (bench.hardware.state).

Windows are cut on decode time (the sum of the engine's timed steps, as decode_tok_s is), so cache truncation
between chunks does not dilute the speed: sustain_s / sustain_window_s windows, each ending at the first decode
call past its length (so the mode runs a little over sustain_s); a wall-clock bound (MAX_WALL_FACTOR) ends it
regardless.
Burst is the first window's speed, sustained the median of the last third; the time to throttle is the end of
the first window more than THROTTLE_DROP below burst.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.hardware.sensors import SYSFS
from bench.hardware.state import MachineState, StateReader
from bench.results import samples_to_text
from bench.suite import Cell

THROTTLE_DROP = 0.05  # a window this much slower than burst counts as throttled
CHUNK_SHARE = 0.05  # a decode call lasts about this share of a window
MAX_CHUNK_STEPS = 16  # bounds a window's overshoot when the machine slows down suddenly
MAX_WALL_FACTOR = 2.0  # the mode stops after this × sustain_s + MAX_WALL_EXTRA_S of wall time, whatever happens
MAX_WALL_EXTRA_S = 30.0
_ROUNDING = 1e-9  # step times summed in floats: ten 0.1 s steps make a 1 s window

Chunks = Iterator[tuple[int, float]]  # (tokens made, seconds they took) per engine call


class Decoder(Protocol):
    """What the sustained mode needs of a SpeedEngine (bench.runners.base)."""

    def n_vocab(self) -> int: ...
    def reset(self, depth_tokens: np.ndarray) -> None: ...
    def truncate(self, n_keep: int) -> bool: ...
    def decode(self, tokens: np.ndarray) -> list[float]: ...


@dataclass(frozen=True)
class Window:
    end_s: float  # decode seconds since the sustained mode began
    tok_s: float
    state: MachineState


def decode_chunks(engine: Decoder, cell: Cell, seed: int = 4321) -> Chunks:
    """Endless decoding from the cell's depth, back to `depth` (untimed) each time the cell's gen_tokens are
    used up, so the context never outgrows what the cell sized. A chunk lasts about CHUNK_SHARE of a window
    (from the last chunk's slowest step, at most MAX_CHUNK_STEPS steps), so windows end close to their length on a
    slow machine and a fast one is not slowed by a call per token."""
    rng = np.random.default_rng(seed)
    n_seq = cell.setting("parallel")
    depth_tokens = rng.integers(0, engine.n_vocab(), size=(n_seq, cell.depth), dtype=np.int32)
    step_s = math.inf
    while True:
        if not engine.truncate(cell.depth):
            engine.reset(depth_tokens)
        used = 0
        while used < cell.gen_tokens:
            wanted = max(1, min(MAX_CHUNK_STEPS, int(CHUNK_SHARE * cell.sustain_window_s / step_s)))
            steps = min(wanted, cell.gen_tokens - used)
            tokens = rng.integers(0, engine.n_vocab(), size=(steps, n_seq), dtype=np.int32)
            seconds = engine.decode(tokens)
            step_s = max(max(seconds), 1e-6)  # the slowest step: a chunk errs short, not long
            used += steps
            yield steps * n_seq, sum(seconds)


def run_windows(chunks: Chunks, reader: StateReader, sustain_s: float, window_s: float) -> tuple[list[Window], str]:
    """sustain_s / window_s windows (rounded, at least one), each ending at the first chunk past window_s of
    decode time, and "" or why the mode stopped sooner (the wall-clock bound, or the engine failing: the
    windows completed by then are kept, and so are the cell's measured repetitions)."""
    windows: list[Window] = []
    wanted = max(1, round(sustain_s / window_s))
    deadline = time.monotonic() + MAX_WALL_FACTOR * sustain_s + MAX_WALL_EXTRA_S
    elapsed = window_tokens = window_time = 0.0
    try:
        for tokens, seconds in chunks:
            elapsed += seconds
            window_tokens += tokens
            window_time += seconds
            if window_time >= window_s - _ROUNDING:
                windows.append(Window(elapsed, window_tokens / window_time, reader.read()))
                window_tokens = window_time = 0.0
            if len(windows) >= wanted:
                return windows, ""
            if time.monotonic() > deadline:
                return (
                    windows,
                    f"sustained mode stopped at its wall-clock bound after {len(windows)} of {wanted} windows",
                )
    except Exception as exc:  # noqa: BLE001 - a failing sustained mode must not lose the measured repetitions
        return windows, f"sustained mode stopped after {len(windows)} of {wanted} windows: {type(exc).__name__}: {exc}"
    return windows, f"sustained mode stopped after {len(windows)} of {wanted} windows: the engine stopped decoding"


def _series(values: list[float | None]) -> str:
    """A per-window series for the CSV; nan where a window had no reading, "" when none had one."""
    if all(v is None for v in values):
        return ""
    return samples_to_text(math.nan if v is None else float(v) for v in values)


def summarize_windows(windows: list[Window]) -> dict[str, Any]:
    """The row's sustained-mode fields from its windows."""
    if not windows:
        return {}
    burst = windows[0].tok_s
    last_third = windows[-max(1, len(windows) // 3) :]
    sustained = statistics.median(w.tok_s for w in last_third)
    throttled = next((w.end_s for w in windows if w.tok_s < (1 - THROTTLE_DROP) * burst), None)
    reasons = dict.fromkeys(r for w in windows for r in w.state.reasons)
    return {
        "sustain_burst_tok_s": burst,
        "sustain_tok_s": sustained,
        "sustain_ratio": sustained / burst if burst > 0 else None,
        "sustain_throttle_s": throttled,
        "sustain_throttle_reasons": "; ".join(reasons),
        "sustain_t_s_samples": samples_to_text(w.end_s for w in windows),
        "sustain_tok_s_samples": samples_to_text(w.tok_s for w in windows),
        "sustain_temp_c_samples": _series([w.state.temp_c for w in windows]),
        "sustain_clock_mhz_samples": _series([w.state.clock_mhz for w in windows]),
        "sustain_power_w_samples": _series([w.state.power_w for w in windows]),
    }


def sustained_summary(fields: dict[str, Any]) -> str:
    """One line for the run's log: burst, sustained, their ratio, when and why it throttled ("" without a run)."""
    ratio = fields.get("sustain_ratio")
    if ratio is None:
        return (
            fields.get("sustain_sensors", "") if str(fields.get("sustain_sensors", "")).startswith("sustained") else ""
        )
    throttle = fields.get("sustain_throttle_s")
    reasons = fields.get("sustain_throttle_reasons") or "no throttle reason reported"
    when = (
        "never fell 5 % below burst" if throttle is None else f"fell 5 % below burst after {throttle:.0f} s ({reasons})"
    )
    return (
        f"sustained {fields['sustain_tok_s']:.1f} tok/s vs burst {fields['sustain_burst_tok_s']:.1f} tok/s: "
        f"ratio {ratio:.3f}; {when}"
    )


def sustained_fields(
    chunks: Chunks | None,
    cell: Cell,
    backend: str,
    root: Path = SYSFS,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    """The sustained mode of one cell: its row fields, or why it could not run (`chunks` None: the engine
    cannot keep decoding)."""
    if chunks is None:
        return {"sustain_sensors": f"sustained mode: not available: the {backend} engine has no sustain_chunks"}
    with StateReader(cell.device_kind, cell.device_index, root, clock) as reader:
        windows, stopped = run_windows(chunks, reader, cell.sustain_s, cell.sustain_window_s)
    notes = "; ".join(note for note in (stopped, reader.missing_text()) if note)
    return {**summarize_windows(windows), "sustain_sensors": notes}

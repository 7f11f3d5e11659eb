"""What a reader of a comparison must know besides the verdicts: software that changed since the baseline,
rows measured under system warnings, and metrics the gate could only judge by their threshold."""

from __future__ import annotations

from collections import Counter

from bench.compare.matching import SOFTWARE_COLUMNS
from bench.compare.metrics import MIN_HISTORY_RUNS
from bench.compare.model import CellSide, Comparison, SoftwareChange, WarningNote

NOT_RECORDED = "(not recorded)"


def software_changes(pairs: list[tuple[CellSide, CellSide]]) -> list[SoftwareChange]:
    """Per host and column, each (baseline -> current) difference among the matched cells, with its count."""
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for base, cur in pairs:
        for column in SOFTWARE_COLUMNS:
            before, after = base.software.get(column, ""), cur.software.get(column, "")
            if before != after:
                counts[(cur.host, column, before or NOT_RECORDED, after or NOT_RECORDED)] += 1
    return [
        SoftwareChange(host, column, before, after, cells) for (host, column, before, after), cells in counts.items()
    ]


def warning_notes(pairs: list[tuple[CellSide, CellSide]]) -> list[WarningNote]:
    """Per side, host and warning text, how many matched cells were measured under it."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for base, cur in pairs:
        for side_name, side in (("baseline", base), ("current", cur)):
            for warning in dict.fromkeys(side.system_warnings):  # once per cell, even over several runs
                counts[(side_name, side.host, warning)] += 1
    return [WarningNote(side, host, warning, cells) for (side, host, warning), cells in counts.items()]


def add_update_notes(comparison: Comparison, pairs: list[tuple[CellSide, CellSide]]) -> None:
    """Notes on the cells measured on both sides (the ones whose figures are judged)."""
    measured = [(base, cur) for base, cur in pairs if base.status == cur.status == "ok"]
    comparison.changed_since_baseline += software_changes(measured)
    comparison.system_warnings += warning_notes(measured)


def add_method_notes(comparison: Comparison) -> None:
    """Says where the gate fell back to the threshold alone for lack of per-repetition samples."""
    unsampled: Counter[str] = Counter()
    for cell in comparison.cells:
        for change in cell.changes:
            if change.method == "no-samples":
                unsampled[change.metric] += 1
    if unsampled:
        counted = ", ".join(f"{metric} ({cells} cells)" for metric, cells in unsampled.items())
        comparison.notes.append(
            f"judged by threshold only, without a noise test: {counted}; their rows carry no per-repetition "
            "samples (results written before bench recorded them)"
        )


def add_history_note(comparison: Comparison) -> None:
    """Says which test history mode used: run means from MIN_HISTORY_RUNS baseline runs, else repetitions."""
    judged = [c for c in comparison.cells if c.changes]
    pooled = sorted({c.baseline_runs for c in judged if c.baseline_runs < MIN_HISTORY_RUNS})
    by_runs = sum(c.baseline_runs >= MIN_HISTORY_RUNS for c in judged)
    if by_runs:
        comparison.notes.append(
            f"history: {by_runs} cells tested with whole runs as the unit (the current run against the spread "
            "of the baseline run means)"
        )
    if pooled:
        comparison.notes.append(
            f"history: {len(judged) - by_runs} cells have only {' or '.join(map(str, pooled))} baseline run(s), "
            f"fewer than {MIN_HISTORY_RUNS}: tested on per-repetition samples instead (pooled over those runs), "
            "which miss night-to-night drift; whole runs become the unit with --last "
            f"{MIN_HISTORY_RUNS} or more once the history holds them"
        )

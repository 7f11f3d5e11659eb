"""A comparison as report blocks (bench.report.document), rendered to markdown or HTML, or as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

from bench.compare.metrics import format_value
from bench.compare.model import EXIT_CANNOT_COMPARE, EXIT_OK, EXIT_REGRESSION, CellComparison, Comparison, MetricChange
from bench.report.document import Block, Bullets, Code, Heading, Inline, Paragraph, Table
from bench.report.html import render_html
from bench.report.markdown import render_markdown
from bench.stats import UNSTABLE_CV_PCT

ICONS = {EXIT_OK: "✅", EXIT_REGRESSION: "❌", EXIT_CANNOT_COMPARE: "⚠️"}
CHANGE_HEADERS = [
    "host",
    "cell",
    "cell_id",
    "metric",
    "baseline",
    "current",
    "change",
    "threshold",
    "p (one-sided)",
    "q (BH)",
    "noise test",
]
CHANGE_NUMERIC = [False, False, False, False, True, True, True, True, True, True, False]
SECTIONS = (
    ("Regressions", "regression"),
    ("Within noise (not counted)", "within-noise"),
    ("Improvements", "improvement"),
    ("Unchanged metrics", "unchanged"),
)


def headline(comparison: Comparison) -> str:
    if comparison.exit_code == EXIT_CANNOT_COMPARE:
        return f"cannot compare: {comparison.reason}"
    regressed = comparison.regressed_cells
    missing = f"; {len(comparison.not_measured)} cells not measured" if comparison.not_measured else ""
    if regressed:
        return f"REGRESSION in {len(regressed)} of {len(comparison.cells)} cells{missing}"
    if missing:
        return f"NOT MEASURED: {len(comparison.not_measured)} cells ok in the baseline are missing tonight"
    return f"no regression in {len(comparison.cells)} cells"


def _probability(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def _change_row(cell: CellComparison, change: MetricChange) -> list[Inline]:
    p_value = change.p_worse if change.worse else change.p_better
    return [
        cell.host,
        cell.label,
        Code(cell.cell_id),
        f"{change.metric}{' ⚠ unstable' if cell.unstable else ''}",
        format_value(change.baseline, change.unit),
        format_value(change.current, change.unit),
        "from 0" if change.change_pct is None else f"{change.change_pct:+.1f}%",
        f"{change.threshold_pct:g}%",
        _probability(p_value),
        _probability(change.q_value),
        change.test,
    ]


def _change_table(cells: list[CellComparison], verdict: str) -> Table | None:
    rows = [_change_row(cell, change) for cell in cells for change in cell.changes if change.verdict == verdict]
    return Table(CHANGE_HEADERS, rows, list(CHANGE_NUMERIC)) if rows else None


def _setup(comparison: Comparison) -> Bullets:
    thresholds = ", ".join(
        [f"{comparison.default_threshold_pct:g}% by default"]
        + [f"{k} {v:g}%" for k, v in comparison.thresholds_pct.items()]
    )
    lines = [
        f"baseline: {', '.join(comparison.baseline) or '–'}",
        f"current: {', '.join(comparison.current) or '–'}",
    ]
    if comparison.test:  # empty when the inputs could not even be read
        lines += [
            f"cells matched by {comparison.match_rule}; threshold {thresholds}",
            f"false-discovery rate {comparison.fdr_pct:g}% (Benjamini-Hochberg) across "
            f"{comparison.tests_in_family} one-sided tests",
            f"test: {comparison.test}",
        ]
    return Bullets(tuple(Paragraph.of(line) for line in lines))


def _updates(comparison: Comparison) -> list[Block]:
    blocks: list[Block] = []
    if comparison.changed_since_baseline:
        rows: list[list[Inline]] = [
            [c.host, c.column, c.baseline, c.current, str(c.cells)] for c in comparison.changed_since_baseline
        ]
        blocks += [
            Heading(3, "Changed since baseline"),
            Paragraph.of(
                "Software or hardware details that differ between matched rows; the cells were judged anyway."
            ),
            Table(["host", "column", "baseline", "current", "cells"], rows, [False, False, False, False, True]),
        ]
    if comparison.system_warnings:
        rows = [[w.side, w.host, w.warning, str(w.cells)] for w in comparison.system_warnings]
        blocks += [
            Heading(3, "Measured under system warnings"),
            Table(["side", "host", "warning", "cells"], rows, [False, False, False, True]),
        ]
    return blocks


def _notes(comparison: Comparison) -> list[str]:
    notes = list(comparison.notes)
    notes += [
        f"{c.label} [{c.cell_id}]: {n}" for c in comparison.cells for n in c.notes if not n.startswith("unstable")
    ]
    notes += [f"only in baseline: {name}" for name in comparison.only_in_baseline]
    notes += [f"only in current: {name}" for name in comparison.only_in_current]
    return notes


def to_blocks(comparison: Comparison) -> list[Block]:
    blocks: list[Block] = [
        Heading(2, f"bench compare: {ICONS[comparison.exit_code]} {headline(comparison)}"),
        _setup(comparison),
    ]
    stopped: list[list[Inline]] = [
        [c.host, c.label, Code(c.cell_id), c.status_regression] for c in comparison.cells if c.status_regression
    ]
    if stopped:
        blocks += [
            Heading(3, "Cells that stopped working"),
            Table(["host", "cell", "cell_id", "what changed"], stopped),
        ]
    if comparison.not_measured:
        blocks += [
            Heading(3, "Cells missing tonight (fail the gate; --allow-missing makes them a note)"),
            Bullets(tuple(Paragraph.of(text) for text in comparison.not_measured)),
        ]
    for title, verdict in SECTIONS[:3]:
        if table := _change_table(comparison.cells, verdict):
            blocks += [Heading(3, title), table]
    blocks += _updates(comparison)
    unstable = [c for c in comparison.cells if c.unstable]
    if unstable:
        items = tuple(Paragraph.of(f"{c.label} ", Code(c.cell_id), f" on {c.host}") for c in unstable)
        blocks += [
            Heading(3, f"Unstable cells (spread over {UNSTABLE_CV_PCT:g}% CV across repetitions)"),
            Bullets(items),
        ]
    if notes := _notes(comparison):
        blocks += [Heading(3, "Notes"), Bullets(tuple(Paragraph.of(n) for n in notes))]
    title, verdict = SECTIONS[3]
    if table := _change_table(comparison.cells, verdict):
        blocks += [Heading(3, title), table]
    return blocks


def to_markdown(comparison: Comparison) -> str:
    return render_markdown(to_blocks(comparison), image_dir=".")


def to_html(comparison: Comparison) -> str:
    return render_html(to_blocks(comparison), title=f"bench compare: {headline(comparison)}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def to_json(comparison: Comparison) -> str:
    data = asdict(comparison)
    data["verdict"] = headline(comparison)
    data["regressions"] = [
        {
            "cell_id": c.cell_id,
            "host": c.host,
            "label": c.label,
            "status": c.status_regression,
            "metrics": [r.metric for r in c.regressions],
        }
        for c in comparison.regressed_cells
    ]
    return json.dumps(_json_safe(data), indent=2) + "\n"

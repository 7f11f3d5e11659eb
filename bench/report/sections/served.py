"""Section "Served capacity": per setup measured under a `load` profile, the largest arrival rate it sustains
at the SLO, goodput, users and cost there beside its burst capacity, every load point, and the curves
(bench.report.served computes the figures)."""

from __future__ import annotations

import pandas as pd

from bench.report import format as fmt
from bench.report.analysis import Analysis
from bench.report.capacity import describe_slo
from bench.report.document import Block, Code, Heading, Paragraph, Strong
from bench.report.sections import Column, frame_table
from bench.report.served import SETUP
from bench.report.served_plots import served_plot

TITLE = "Served capacity"


def _dollars(values: pd.Series) -> pd.Series:
    return ("$" + fmt.fixed(values, 3)).where(fmt.as_float(values).notna(), fmt.MISSING)


def _summary(table: pd.DataFrame) -> list[Column]:
    rate = fmt.fixed(table["rate_rps"], 2).where(table["rate_rps"].notna(), "none met")
    columns = [
        Column("device", fmt.text(table["device"])),
        Column("setup", fmt.text(table[SETUP])),
        Column("load points", fmt.integer(table["points"]), True),
        Column("sustainable at the SLO (requests/s)", rate, True),
        Column("goodput there (requests/s)", fmt.fixed(table["goodput_rps"], 2), True),
        Column("output there (tok/s)", fmt.fixed(table["output_tok_s"]), True),
        Column("users there (rate × time per request)", fmt.fixed(table["users"], 1), True),
        Column("burst capacity (users)", fmt.integer(table["burst_users"]), True),
    ]
    if fmt.as_float(table["usd_per_mtok"]).notna().any():
        columns.append(Column("cost there ($ per 1M tok)", _dollars(table["usd_per_mtok"]), True))
    return columns


def _points(points: pd.DataFrame, percentile: int) -> list[Column]:
    p = f"p{percentile}"
    limited = points["client_limited"].astype(str).str.lower().isin(["true", "1"])
    return [
        Column("device", fmt.text(points["device"])),
        Column("setup", fmt.text(points[SETUP])),
        Column("load", fmt.text(points["load"])),
        Column("arrival rate (requests/s)", fmt.fixed(points["arrival_rps"], 2), True),
        Column("throughput (requests/s)", fmt.fixed(points["request_throughput_rps"], 2), True),
        Column("goodput (requests/s)", fmt.fixed(points["goodput_rps"], 2), True),
        Column("output (tok/s)", fmt.fixed(points["decode_tok_s_mean"]), True),
        Column(f"TTFT {p} (ms)", fmt.fixed(points[f"ttft_ms_p{percentile}"], 0), True),
        Column(f"per token {p} (ms)", fmt.fixed(points[f"tpot_ms_p{percentile}"], 1), True),
        Column("meets the SLO", points["meets_slo"].map({True: "yes", False: "no"})),
        Column("schedule lag p99 (ms)", fmt.fixed(points["schedule_lag_ms_p99"], 1), True),
        Column("client", limited.map({True: "⚠ client-limited", False: "kept up"})),
    ]


def most_requests_paragraph(table: pd.DataFrame) -> list[Block]:
    """Recommendations' "most requests/s at the SLO": the setup sustaining the highest arrival rate."""
    sustained = table[fmt.as_float(table["rate_rps"]) > 0] if not table.empty else table
    if sustained.empty:
        if table.empty:
            return []
        return [Paragraph.of("Most requests/s at the SLO: none — no load point met the SLO (see Served capacity).")]
    best = sustained.loc[fmt.as_float(sustained["rate_rps"]).idxmax()]
    goodput = f", goodput {best['goodput_rps']:.2f} requests/s" if pd.notna(best["goodput_rps"]) else ""
    return [
        Paragraph.of(
            "Most requests/s at the SLO: ",
            Strong(f"{best[SETUP]} on {best['device']}"),
            f" — {best['rate_rps']:.2f} requests/s sustained{goodput} (see Served capacity).",
        )
    ]


def build(analysis: Analysis) -> list[Block]:
    points, table = analysis.served_points, analysis.served
    if points.empty:
        return [
            Heading(2, TITLE),
            Paragraph.of(
                "No load profile was measured: requests arriving over time show the largest rate a server "
                "sustains at the SLO. Measure one with the server backend and ",
                Code("load: [{sweep: 5}]"),
                " (or ",
                Code("{poisson: R}"),
                ", ",
                Code("{capacity: SLO-PRESET}"),
                ") under the suite's ",
                Code("knobs:"),
                ".",
            ),
        ]
    slo = analysis.capacity.slo
    intro = Paragraph.of(
        "Requests arriving over time (the server backend's ",
        Code("load"),
        " profiles: constant or Poisson arrivals, a sweep, a capacity search), judged at ",
        describe_slo(slo),
        ". Sustainable: the largest arrival rate meeting the SLO with every lower measured rate meeting it too "
        "(no failed request, and a client that kept its schedule); a capacity search gives its own bisected "
        "rate. Goodput counts the requests meeting every limit, each on its own. Users are the rate times the "
        "mean time a request spends (Little's law). Closed-loop and all-at-once points are placed at their "
        "measured throughput. Burst capacity: the Capacity section's figure for the same model on the same "
        "device, where measured.",
    )
    blocks: list[Block] = [Heading(2, TITLE), intro, frame_table(_summary(table))]
    blocks += [Heading(3, "Load points"), frame_table(_points(points, slo.percentile))]
    image = served_plot(points, slo)
    return blocks + ([image] if image is not None else [])

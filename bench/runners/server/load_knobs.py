"""The server backend's load knobs: the load profile (a matrix axis, bench.runners.server.arrivals), the
bounds of one load point (registered with the backend's other knobs by its spec), and the SLO limits a load
point is judged by, filled from the suite's `slo` (SLO_SETTINGS: never written in `knobs:`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bench.runners.server.arrivals import check_load, expand_load, parse_load, profile_of, show_load
from bench.runners.server.lengths import check_lengths
from bench.suite.blocks import SuiteSettings
from bench.suite.knobs import Knob
from bench.suite.schema import SLO_PRESETS, Suite

PRESET_PERCENTILE = 99  # MLPerf's limits are 99th percentiles

KNOBS: tuple[Knob, ...] = (
    Knob(
        "load",
        str,
        "",
        "how requests arrive: empty = `parallel` closed-loop users; {concurrency: N}, {rate: R} (requests/s, "
        "constant gaps), {poisson: R} (seeded exponential gaps), {sweep: K} (synchronous, throughput, then K-2 "
        "rates between), {capacity: SLO-PRESET} (the largest rate meeting the preset's p99 TTFT and TPOT)",
        "load",
        "load ",
        parse=parse_load,
        show=show_load,
        validate=check_load,
        expand=expand_load,
    ),
    Knob(
        "load_requests",
        int,
        100,
        "the most requests one open-loop load point sends (warm-up and cool-down included)",
        "requests per load point",
        "lr",
        minimum=1,
    ),
    Knob(
        "load_duration_s",
        int,
        60,
        "the longest one load point sends for; requests still running at twice this are cancelled (incomplete)",
        "load duration (s)",
        "ld",
        minimum=1,
    ),
    Knob(
        "load_warmup_pct",
        int,
        10,
        "percent of a load point's requests, the first sent, left out of its figures (warm-up)",
        "warm-up %",
        "lw",
        minimum=0,
    ),
    Knob(
        "load_cooldown_pct",
        int,
        10,
        "percent of a load point's requests, the last sent, left out of its figures (cool-down)",
        "cool-down %",
        "lc",
        minimum=0,
    ),
    Knob(
        "prompt_lengths",
        str,
        "",
        "a load point's prompt lengths: empty = prompt_tokens; uniform:LO:HI, normal:MEAN:SD, empirical:A,B,C "
        "(each cut to [1, prompt_tokens])",
        "prompt lengths",
        "pl ",
        validate=check_lengths,
    ),
    Knob(
        "output_lengths",
        str,
        "",
        "a load point's output lengths (max_tokens): empty = gen_tokens; uniform:LO:HI, normal:MEAN:SD, "
        "empirical:A,B,C, mlperf-deepseek-r1 (MLPerf's mean 4,043 and cap 32K, scaled by gen_tokens / 32K), "
        "reasoning (free to stop within gen_tokens: think, answer, end)",
        "output lengths",
        "ol ",
        validate=check_lengths,
    ),
    Knob(
        "slo_ttft_ms",
        float,
        0.0,
        "filled from the suite's `slo` for a load point (a capacity preset's own): the TTFT limit, ms (0: none)",
        "SLO TTFT (ms)",
        "st",
    ),
    Knob(
        "slo_tpot_ms",
        float,
        0.0,
        "filled from the suite's `slo` for a load point (a capacity preset's own): the time per output token "
        "limit, ms (0: none)",
        "SLO TPOT (ms)",
        "sp",
    ),
    Knob(
        "slo_percentile",
        int,
        0,
        "filled from the suite's `slo` for a load point: the percentile its limits hold at (0: no SLO)",
        "SLO percentile",
        "sq",
    ),
)


SLO_KNOBS = ("slo_ttft_ms", "slo_tpot_ms", "slo_percentile")


def preset_slo(load: str) -> dict[str, Any]:
    """A capacity preset's limits as the slo_* knobs' values (MLPerf's p99 limits); {} when the load names
    none (or cannot be read: the loader names a malformed profile)."""
    try:
        preset = profile_of(load).preset if load else ""
    except ValueError:
        return {}
    if not preset:
        return {}
    ttft, tpot = SLO_PRESETS[preset]
    return dict(zip(SLO_KNOBS, (float(ttft), float(tpot), PRESET_PERCENTILE), strict=True))


def slo_knobs(suite: Suite, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A load point's SLO limits: a capacity preset's own, else the suite's `slo`; none for a cell without a
    load profile (its id stays as it was)."""
    load = str(fields.get("load") or "")
    if not load:
        return {}
    ttft_ms, user_tok_s = suite.slo.limits()
    tpot_ms = 1000.0 / user_tok_s if user_tok_s else 0.0
    return preset_slo(load) or dict(zip(SLO_KNOBS, (float(ttft_ms or 0.0), tpot_ms, suite.slo.percentile), strict=True))


SLO_SETTINGS = SuiteSettings("slo", SLO_KNOBS, slo_knobs)

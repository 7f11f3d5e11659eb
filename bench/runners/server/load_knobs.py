"""The server backend's load knobs: the load profile (a matrix axis, bench.runners.server.arrivals) and the
bounds of one load point (registered with the backend's other knobs by its spec)."""

from __future__ import annotations

from bench.runners.server.arrivals import check_load, expand_load, parse_load, show_load
from bench.runners.server.lengths import check_lengths
from bench.suite.knobs import Knob

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
)

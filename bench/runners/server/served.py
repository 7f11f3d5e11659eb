"""A cell with a `load` profile: one load point (or a capacity search) measured against a running server.

A sweep's points are separate cells of one load group, measured in order by one engine: points 3..K take
their rates from the synchronous and throughput points measured before them (kept here); a point whose
predecessors were measured elsewhere (another worker, a resumed run) measures them again first, unrecorded.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.runners.server.arrivals import LoadProfile, send_offsets, sweep_rates
from bench.runners.server.capacity_search import RESOLUTION_FRACTION, Capacity, Limits, Probe, search_capacity
from bench.runners.server.client import Endpoint, stream_request
from bench.runners.server.lengths import FREE_TO_STOP, draw_lengths
from bench.runners.server.load_knobs import SLO_KNOBS, preset_slo
from bench.runners.server.loadpoint import PointBounds, load_point_fields
from bench.runners.server.openloop import LoadRun, run_closed, run_open
from bench.runners.server.shapes import PromptMaker, request_body
from bench.runners.server.stream import RequestRecord
from bench.runners.server.tokens import TokenCounter
from bench.suite import Cell

MIN_PROBE_REQUESTS = 5  # a capacity probe's rate must fit this many requests within load_duration_s
PATHS = {"chat": "/chat/completions", "completions": "/completions"}


@dataclass(frozen=True)
class Target:
    """Where and what one load point sends: the server, the model name it asks for, the request shape."""

    endpoint: Endpoint
    model: str
    cell: Cell
    model_path: Path | None = None  # the GGUF that counts prompt tokens where the server has no /tokenize

    @property
    def chat(self) -> bool:
        return bool(self.cell.setting("endpoint") == "chat")

    @property
    def requests(self) -> int:
        return int(self.cell.setting("load_requests"))

    @property
    def duration_s(self) -> float:
        return float(self.cell.setting("load_duration_s"))

    @property
    def seed(self) -> int:
        return zlib.crc32(self.cell.cell_id.encode())

    @property
    def slo(self) -> tuple[Limits, int]:
        """The SLO this point is judged by: a capacity preset's own, else its slo_* knobs (filled from the
        suite's `slo`): its limits (None: not limited) and their percentile (0: the cell has none)."""
        values = preset_slo(str(self.cell.setting("load"))) or {k: self.cell.setting(k) for k in SLO_KNOBS}
        ttft, tpot, percentile = (values[k] or 0 for k in SLO_KNOBS)
        return Limits(float(ttft) or None, float(tpot) or None), int(percentile)

    def prompt_lengths(self) -> list[int]:
        spec = str(self.cell.setting("prompt_lengths"))
        return draw_lengths(spec, self.cell.prompt_tokens, self.requests, self.seed)

    @property
    def ignore_eos(self) -> bool:
        """Answers held to their lengths, unless the `reasoning` preset leaves the model free to stop."""
        return bool(self.cell.setting("ignore_eos")) and self.cell.setting("output_lengths") != FREE_TO_STOP

    def output_lengths(self) -> list[int]:
        spec = str(self.cell.setting("output_lengths"))
        return draw_lengths(spec, self.cell.gen_tokens, self.requests, self.seed + 1)


def _prompts(target: Target, batch: int) -> tuple[list[str], list[str]]:
    """The prompts of one load point and the warnings of their making: `batch` numbers them apart from every
    other point this engine sent, so no point hits the server's prompt cache with another's prompts (a capacity
    search's probes, a sweep's ends) unless the cell asks for a shared prefix."""
    shared = int(target.cell.setting("shared_prefix_tokens"))
    counter = TokenCounter(target.endpoint, target.model_path)
    maker = PromptMaker(counter, target.chat, seed=target.seed, shared_prefix_tokens=shared)
    first = batch * target.requests
    try:
        lengths = target.prompt_lengths()
        return [maker.prompt(first + number, length) for number, length in enumerate(lengths)], maker.warnings
    finally:
        maker.close()


async def _drive(target: Target, prompts: list[str], kind: str, amount: float) -> LoadRun:
    """One load point: `kind` closed (amount = users) or throughput, rate, poisson (amount = requests/s)."""
    cell = target.cell
    ignore_eos = target.ignore_eos
    timeout_s = float(cell.setting("request_timeout_s"))
    path = PATHS["chat" if target.chat else "completions"]
    connections = int(amount) if kind == "closed" else target.requests
    prompt_lengths, output_lengths = target.prompt_lengths(), target.output_lengths()

    def make(number: int) -> RequestRecord:
        return RequestRecord(user=number, index=number, warmup=False, prompt_tokens=prompt_lengths[number])

    async with target.endpoint.client(connections) as client:

        async def send(record: RequestRecord) -> RequestRecord:
            body = request_body(
                target.chat, target.model, prompts[record.user], output_lengths[record.user], ignore_eos, record.user
            )
            return await stream_request(client, target.endpoint, path, body, record, timeout_s)

        if kind == "closed":
            return await run_closed(int(amount), target.requests, target.duration_s, make, send)
        offsets = send_offsets(kind, amount, target.requests, target.duration_s, target.seed)
        return await run_open(list(offsets), target.duration_s, make, send)


@dataclass
class ServedLoad:
    """Measures load points for one engine; remembers each sweep's synchronous and throughput rates."""

    sweep_ends: dict[tuple[str, str], float] = field(default_factory=dict)  # (sweep, role) -> requests/s
    points: int = 0  # load points measured so far (numbers each one's prompts apart)

    def _point(self, target: Target, kind: str, amount: float) -> dict[str, Any]:
        self.points += 1
        prompts, warnings = _prompts(target, self.points)
        run = asyncio.run(_drive(target, prompts, kind, amount))
        cell = target.cell
        bounds = PointBounds(int(cell.setting("load_warmup_pct")), int(cell.setting("load_cooldown_pct")))
        if kind == "throughput":
            # Every request is sent at once, so none is first or last: leaving some out would count fewer
            # requests over the span all of them took to serve, and put the ceiling below the synchronous rate.
            bounds = PointBounds(0, 0)
        rate = amount if kind in ("rate", "poisson") else None
        # Answers held to their own lengths: the check that none ended early uses the shortest target.
        shortest = min(target.output_lengths())
        fields = load_point_fields(run, bounds, shortest, target.ignore_eos, rate, target.slo[0])
        fields["warnings"] = "; ".join(w for w in (*warnings, fields.get("warnings") or "") if w)
        return fields

    def _sweep_end(self, target: Target, profile: LoadProfile, role: str) -> float:
        """A sweep's synchronous or throughput rate: this engine's measurement of that point, or a new one."""
        key = (target.cell.with_values(load=f"sweep:{profile.value:g}").cell_id, role)
        if key not in self.sweep_ends:
            self._sweep_role(target, profile, role)
        return self.sweep_ends[key]

    def _sweep_role(self, target: Target, profile: LoadProfile, role: str) -> dict[str, Any]:
        fields = self._point(target, *(("closed", 1) if role == "synchronous" else ("throughput", 0)))
        key = (target.cell.with_values(load=f"sweep:{profile.value:g}").cell_id, role)
        self.sweep_ends[key] = fields.get("request_throughput_rps") or 0.0
        return fields

    def _sweep_point(self, target: Target, profile: LoadProfile) -> dict[str, Any]:
        if profile.sweep_role != "rate":
            return self._sweep_role(target, profile, profile.sweep_role)
        low = self._sweep_end(target, profile, "synchronous")
        high = self._sweep_end(target, profile, "throughput")
        if not (low > 0 and high > 0):
            raise BenchError(
                f"sweep point {profile.point}: its rate lies between the synchronous ({low:.3g} requests/s) and "
                f"throughput ({high:.3g} requests/s) points, and one of them measured no request"
            )
        return self._point(target, "rate", sweep_rates(low, high, int(profile.value))[profile.point - 3])

    def _capacity(self, target: Target, profile: LoadProfile) -> dict[str, Any]:
        limits, percentile = target.slo
        if not percentile or (limits.ttft_ms is None and limits.tpot_ms is None):
            raise BenchError(
                "capacity: this cell has no SLO to search under: give the suite an `slo` (max_ttft_ms, "
                "min_user_tok_s or a preset) or the load a preset, e.g. {capacity: mlperf-llama3.1-8b-server}"
            )
        ceiling = self._point(target, "throughput", 0).get("request_throughput_rps")
        if not ceiling:
            raise BenchError("capacity: the throughput probe measured no request, so there is no rate to search")

        def probe(rate: float) -> Probe:
            fields = self._point(target, "poisson", rate)
            errors = (fields.get("request_errors") or 0) + (fields.get("requests_incomplete") or 0)
            return Probe(
                rate, fields.get(f"ttft_ms_p{percentile}"), fields.get(f"tpot_ms_p{percentile}"), errors, fields
            )

        floor = MIN_PROBE_REQUESTS / target.duration_s  # fewer requests than this fit in a probe below it
        found = search_capacity(probe, ceiling, limits, RESOLUTION_FRACTION * ceiling, floor_rps=floor)
        return capacity_fields(found)

    def measure(self, target: Target, profile: LoadProfile) -> dict[str, Any]:
        if profile.kind == "sweep":
            return self._sweep_point(target, profile)
        if profile.kind == "capacity":
            return self._capacity(target, profile)
        if profile.kind == "concurrency":
            return self._point(target, "closed", profile.value)
        return self._point(target, profile.kind, profile.value)


def capacity_fields(found: Capacity) -> dict[str, Any]:
    """The capacity row: the figures of the highest rate that met the SLO (blank when none did), and the
    search's answer."""
    fields = dict(found.met.fields) if found.met else {}
    if found.met is None:
        fields["warnings"] = f"no probed rate met the SLO; the lowest broke {found.binding}"
    return {
        **fields,
        "capacity_rps": found.rate_rps,
        "capacity_resolution_rps": found.resolution_rps,
        "capacity_binding": found.binding,
        "capacity_probes": found.probes_text(),
    }

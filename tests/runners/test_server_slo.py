"""The suite's `slo` reaches the server's load points (its slo_* knobs, filled by the matrix through the
backend's SuiteSettings): capacity without a preset searches under it, and every load-point row carries the
goodput under the limits it names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.runners.registry import quantization_catalog
from bench.stats import goodput_rps
from bench.suite import Cell, expand, load_suite
from bench.suite.cell import cell_id_of
from tests.runners.fake_openai_server import FakeServer
from tests.runners.test_server_load import _engine_rows

SUITE = "name: s\nmodels: [{id: m, source: /nonexistent.gguf}]\nbackends: [server]\n"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def _cells(tmp_path: Path, text: str) -> dict[str, Cell]:
    suite_file = tmp_path / "s.yaml"
    suite_file.write_text(SUITE + text)
    return {str(c.setting("load")): c for c in expand(load_suite(suite_file, quantization_catalog()))}


def _slo(cell: Cell) -> tuple[Any, ...]:
    return tuple(cell.setting(k) for k in ("slo_ttft_ms", "slo_tpot_ms", "slo_percentile"))


def test_the_suites_slo_fills_load_points_and_a_preset_overrides_it(tmp_path: Path) -> None:
    cells = _cells(
        tmp_path,
        "slo: {max_ttft_ms: 500, min_user_tok_s: 20, percentile: 90}\n"
        "knobs: {load: ['', {poisson: 2}, capacity, {capacity: mlperf-llama2-70b-server}]}\n",
    )
    assert _slo(cells["poisson:2"]) == (500.0, 50.0, 90)
    assert _slo(cells["capacity"]) == (500.0, 50.0, 90)
    assert _slo(cells["capacity:mlperf-llama2-70b-server"]) == (2000.0, 200.0, 99)  # MLPerf's p99 limits
    assert _slo(cells[""]) == (0.0, 0.0, 0)  # not a load point: its identity is as before
    unfilled = {k: v for k, v in cells[""].fields().items() if not k.startswith("slo_")}
    assert cells[""].cell_id == cell_id_of(unfilled)
    # another SLO is another measurement: the load point's id follows it
    other = _cells(tmp_path, "slo: {max_ttft_ms: 900}\nknobs: {load: [{poisson: 2}]}\n")
    assert _slo(other["poisson:2"]) == (900.0, 0.0, 99)
    assert other["poisson:2"].cell_id != cells["poisson:2"].cell_id


def test_slo_knobs_are_not_written_in_the_suite(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="slo_ttft_ms is filled from the suite's `slo`"):
        _cells(tmp_path, "knobs: {slo_ttft_ms: [100]}\n")
    with pytest.raises(BenchError, match="unknown axis 'slo_tpot_ms'"):
        _cells(tmp_path, "exclude: [{slo_tpot_ms: 5}]\n")


def test_capacity_without_a_preset_searches_under_the_cells_slo(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.01, 0.03  # 30 ms per token at any rate
    slo = {"slo_ttft_ms": 2000.0, "slo_tpot_ms": 20.0, "slo_percentile": 50}  # p50 TPOT <= 20 ms: never met
    (row,) = _engine_rows(fake.url, ["capacity"], load_requests=8, load_duration_s=2, **slo)
    assert row["capacity_rps"] == 0.0 and row["capacity_binding"] == "tpot"
    slo["slo_tpot_ms"] = 300.0  # 10x the gap: met at every rate, the ceiling probe meets it
    (row,) = _engine_rows(fake.url, ["capacity"], load_requests=8, load_duration_s=2, **slo)
    assert row["capacity_rps"] > 0 and row["capacity_binding"] == "" and row["goodput_rps"] > 0


def test_capacity_without_any_slo_is_a_clear_error(fake: FakeServer) -> None:
    with pytest.raises(BenchError, match=r"no SLO to search under: give the suite an `slo`"):
        _engine_rows(fake.url, ["capacity"], load_requests=8, load_duration_s=2)


def test_a_load_point_row_carries_its_goodput(fake: FakeServer) -> None:
    fake.behaviour.first_token_s, fake.behaviour.gap_s = 0.02, 0.005
    loose = {"slo_ttft_ms": 10_000.0, "slo_tpot_ms": 1_000.0, "slo_percentile": 99}
    (row,) = _engine_rows(fake.url, ["poisson:20"], load_requests=20, load_duration_s=10, **loose)
    # every measured request meets limits this loose: goodput is the measured requests over the window
    assert row["goodput_rps"] == pytest.approx(row["requests_measured"] / row["load_span_s"])
    tight = {**loose, "slo_ttft_ms": 1.0}  # no request's TTFT is under 1 ms (the fake waits 20 ms)
    (row,) = _engine_rows(fake.url, ["poisson:20"], load_requests=20, load_duration_s=10, **tight)
    assert row["goodput_rps"] == 0.0
    # the same figure as the one function the report uses, from the row's own samples
    ttft = [float(v) for v in row["ttft_ms_samples"].split(";")]
    tpot = [float(v) for v in row["tpot_ms_samples"].split(";")]
    assert goodput_rps(ttft, tpot, row["load_span_s"], 1.0, 1_000.0) == row["goodput_rps"]

"""The fleet path and the local path write the same rows: one tiny suite run both ways on loopback (a real
Dask scheduler and one `bench fleet worker` named as this machine) gives the same columns and, cell by cell,
the same value in every column that is not a timing or a reading of the moment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("distributed")

from bench.hardware import detect  # noqa: E402
from bench.results import read_results  # noqa: E402
from tests.conftest import two_by_two_suite_yaml  # noqa: E402
from tests.test_fleet import RUN_TIMEOUT_S, Fleet, bench_cmd, child_env, fleet, run_coordinator  # noqa: E402, F401 - fleet: the fixture

# What differs between any two runs of one cell: timings, readings of the machine at that moment (memory
# available, background load), the run and the file a row was read from.
MOMENT = re.compile(
    r"tok_s|_ms|_s$|_s_|samples|_pct|rss|vram|power|energy|bandwidth_gbs|available|free_bytes|source_file|started|finished|run_id|system_warnings"
)


def _by_cell(path: Path) -> pd.DataFrame:
    return read_results([path]).set_index("cell_id").sort_index()


def test_fleet_and_local_runs_write_the_same_rows(fleet: Fleet, write_suite, tmp_path: Path) -> None:  # noqa: F811
    workload = "workload: {prompt_tokens: [32], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}"
    suite = write_suite(two_by_two_suite_yaml("agree", workload=workload))
    fleet.start_worker(detect().host)  # the same host identity, so host and fingerprint columns agree too
    fleet_csv, local_csv = tmp_path / "fleet.csv", tmp_path / "local.csv"
    ran = run_coordinator(suite, fleet, "-o", str(fleet_csv))
    assert ran.returncode == 0, ran.stderr
    local = subprocess.run(
        bench_cmd("run", str(suite), "-o", str(local_csv), "--quiet"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=child_env(),
    )
    assert local.returncode == 0, local.stderr

    by_fleet, by_local = _by_cell(fleet_csv), _by_cell(local_csv)
    assert list(by_fleet.columns) == list(by_local.columns)
    assert list(by_fleet.index) == list(by_local.index) and len(by_local) == 4  # 2 models x 2 devices
    assert sorted(by_local["status"]) == ["ok", "skipped", "skipped", "skipped"]
    stable = [c for c in by_local.columns if not MOMENT.search(c)]
    assert {"status", "reason", "weights", "model_source", "model_file", "backend_version", "host"} <= set(stable)
    differing = {
        (cell_id, column, by_fleet.at[cell_id, column], by_local.at[cell_id, column])
        for column in stable
        for cell_id in by_local.index
        if not (pd.isna(by_fleet.at[cell_id, column]) and pd.isna(by_local.at[cell_id, column]))
        and by_fleet.at[cell_id, column] != by_local.at[cell_id, column]
    }
    assert differing == set(), sorted(differing)

"""The report end to end on a real run (SmolLM2, llama.cpp), the bandwidth probe, and the CLI options."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.hardware.bandwidth import measure_bandwidth_gbs
from bench.report.derived import BANDWIDTH_KINDS, OLD_COPY_PROBE
from bench.results import read_results
from tests.conftest import quick_suite_yaml

FIXTURES = Path(__file__).parent / "fixtures" / "report"


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)


def _numpy_read_gbs(buffer_bytes: int, passes: int = 3) -> float:
    """Reference: one thread summing a uint64 buffer (bytes read per second, best of `passes`)."""
    buffer = np.ones(buffer_bytes // 8, dtype=np.uint64)
    best = math.inf
    for _ in range(passes):
        started = time.perf_counter()
        buffer.sum()
        best = min(best, time.perf_counter() - started)
    return buffer.nbytes / best / 1e9


@pytest.mark.timing  # two bandwidths (bytes over seconds) compared
def test_bandwidth_probe_agrees_with_a_plain_numpy_read() -> None:
    """One probe thread against one thread of numpy summing a buffer of the same size (128 MiB: 4x the 32 MiB L3
    of the machine this was written on). Both count bytes moved per second; read and copy kernels differ (0.66x
    measured here with the copy probe), but a probe that miscounted its bytes (elements for bytes, a factor 8)
    falls outside 3x."""
    size = 128 * 2**20
    reference = _numpy_read_gbs(size)
    probe = measure_bandwidth_gbs(buffer_bytes=size, threads=1, passes=3)
    assert reference / 3 < probe < reference * 3, (probe, reference)


def test_run_records_bandwidth_and_writes_an_html_report(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    suite = write_suite(
        quick_suite_yaml(
            name="rep",
            workload="workload: {prompt_tokens: [32], gen_tokens: 8, depths: [0, 32], repetitions: 2, warmup: 0}",
        )
        + "constraints: {min_decode_tok_s: 1}\ncosts:\n  cpu: {price_usd: 1000, power_w: 65}\n"
    )
    csv_path, report = tmp_path / "out.csv", tmp_path / "r.html"
    done = bench("run", str(suite), "-o", str(csv_path), "--quiet", "--report", str(report))
    assert done.returncode == 0, done.stderr
    rows = read_results([csv_path])
    assert (rows["status"] == "ok").all() and len(rows) == 2
    assert rows["mem_bandwidth_gbs"].nunique() == 1 and rows["mem_bandwidth_gbs"].iloc[0] > 0  # probed once
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and 'src="data:image/png;base64,' in page
    assert "decode ≥ 1 tok/s per user at every measured depth" in page  # run --report passes its suite's constraints
    recorded = rows["mem_bandwidth_source"].iloc[0] if "mem_bandwidth_source" in rows else None
    kind = BANDWIDTH_KINDS[recorded if isinstance(recorded, str) and recorded else OLD_COPY_PROBE]
    assert f"<td>{kind}</td>" in page and "of roofline (%)" in page  # the figure says what it is
    assert "Best overall: <strong>smollm2 Q4_1 on " in page and "$" in page  # costs from the suite


@pytest.mark.parametrize(
    ("options", "written"),
    [
        (["-o", "{tmp}/a.html"], "a.html"),
        (["--format", "html", "-o", "{tmp}/b.report"], "b.report"),
        (["-o", "{tmp}/c.md"], "c.md"),
    ],
)
def test_report_format_follows_option_or_extension(tmp_path: Path, options: list[str], written: str) -> None:
    done = bench("report", str(FIXTURES / "host-a.csv"), *[o.format(tmp=tmp_path) for o in options])
    assert done.returncode == 0, done.stderr
    text = (tmp_path / written).read_text()
    assert text.startswith("<!DOCTYPE html>") == (written != "c.md")
    assert (tmp_path / "c-plots").is_dir() == (written == "c.md")


def test_report_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("suite,model_id,status\ns,m\n")
    done = bench("report", str(bad), "-o", str(tmp_path / "r.md"))
    assert done.returncode == 2 and "bad.csv:2: expected 3 fields" in done.stderr and "Traceback" not in done.stderr
    suite = tmp_path / "s.yaml"
    suite.write_text((FIXTURES / "procurement.yaml").read_text().replace("gpu-box/gpu0:", "gpu-box/gpu9:"))
    done = bench("report", str(FIXTURES / "host-a.csv"), "--suite", str(suite), "-o", str(tmp_path / "r.md"))
    assert done.returncode == 2 and "costs names device 'gpu-box/gpu9'" in done.stderr


def test_report_on_an_empty_folder_names_it(tmp_path: Path) -> None:
    empty = tmp_path / "results"
    empty.mkdir()
    done = bench("report", str(empty), "-o", str(tmp_path / "r.md"))
    assert done.returncode == 2 and f"no .csv files in {empty}/ (the folder is empty)" in done.stderr
    assert "Traceback" not in done.stderr

"""Other processes' CPU use while a cell runs (bench.hardware.background) and how it becomes the cpu_load flag."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.hardware.background import CpuSnapshot, background_cpu_pct, machine_cpus, snapshot
from bench.hardware.noise import CPU_BUSY_PERCENT, SystemWarning, warnings_text

# A busy loop (a CPU for ~2 s) that would slow whatever ran beside it.
pytestmark = pytest.mark.timing


def test_background_share_is_machine_busy_time_minus_our_own() -> None:
    before = CpuSnapshot(wall_s=10.0, machine_busy_s=100.0, own_s=5.0)
    after = CpuSnapshot(wall_s=12.0, machine_busy_s=103.0, own_s=7.0)  # 3 s busy in 2 s, 2 s of it ours
    assert background_cpu_pct(before, after, n_cpus=2) == 25.0  # 1 CPU-second of 4
    assert background_cpu_pct(before, before, n_cpus=2) is None  # no window, no figure
    noisy_counters = CpuSnapshot(wall_s=12.0, machine_busy_s=100.5, own_s=7.0)  # counters tick unevenly
    assert background_cpu_pct(before, noisy_counters, n_cpus=2) == 0.0


def test_a_busy_process_shows_as_background_load() -> None:
    busy = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.monotonic() + 20\nwhile time.monotonic() < end: pass"]
    )
    try:
        time.sleep(0.3)
        before = snapshot()
        time.sleep(1.5)
        share = background_cpu_pct(before, snapshot(), machine_cpus())
    finally:
        busy.kill()
        busy.wait()
    # One busy process is one CPU of machine_cpus(); other jobs on a shared runner only add to it.
    assert share is not None and share >= 0.7 * 100.0 / machine_cpus()


def test_background_load_during_a_cell_flags_cpu_load_even_after_a_quiet_start() -> None:
    governor = SystemWarning("cpu_governor", "", "")
    assert warnings_text([governor], CPU_BUSY_PERCENT + 1) == "cpu_governor; cpu_load"
    assert warnings_text([governor], CPU_BUSY_PERCENT) == "cpu_governor"
    assert warnings_text([SystemWarning("cpu_load", "", "")], 90.0) == "cpu_load"  # named once

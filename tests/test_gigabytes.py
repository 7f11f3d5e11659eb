"""A suite's *_gb fields are decimal gigabytes, as named: 1e9 bytes, not 2**30 (issue 23 item 9)."""

from __future__ import annotations

import pandas as pd

from bench.report.choose import constraint_reasons
from bench.runners.memory import device_budget
from bench.suite import GB, Constraints, DeviceSpec, Limits
from tests.test_hardware import make_fp


def test_memory_limit_and_an_absent_cards_memory_are_read_as_gb() -> None:
    no_gpu = make_fp(gpus=(), ram_available_bytes=60 * 2**30)
    limited = device_budget(no_gpu, DeviceSpec(id="cpu", kind="cpu"), Limits(memory_limit_gb=2))
    assert limited.ram_bytes == 2_000_000_000 and "2 GB" in limited.source
    absent = device_budget(no_gpu, DeviceSpec(id="gpu0", kind="cuda", memory_gb=24))
    assert absent.vram_bytes == 24_000_000_000 and GB == 10**9


def test_max_memory_gb_compares_and_says_gb() -> None:
    configs = pd.DataFrame({"memory_bytes": [0.99e9, 1.01e9, 2**30]})  # 2**30 bytes is 1.07 GB, within 1 GiB
    reasons = constraint_reasons(configs, Constraints(max_memory_gb=1))["max_memory_gb"].tolist()
    assert reasons == ["", "memory 1.01 GB > 1 allowed", "memory 1.07 GB > 1 allowed"]

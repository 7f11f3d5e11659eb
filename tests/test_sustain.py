"""Sensors, energy and the sustained mode against a simulated sysfs tree and a fake NVML, every figure computed
by hand: RAPL with a wrapping counter, hwmon / thermal-zone temperatures, cpufreq, idle power taken out, and a
GPU that throttles halfway through a sustained run."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.errors import BenchError
from bench.hardware import nvml, sensors
from bench.hardware.energy import CounterMeter
from bench.hardware.sensors import RaplCounter, rapl_domains
from bench.hardware.state import CPU_THROTTLE, MachineState, StateReader, sensor_inventory
from bench.run.local import RunOptions, load_run_suite
from bench.runners import cell_energy as cell_energy_module
from bench.runners.base import SpeedEngine, measure_cell, repetition_fields
from bench.runners.cell_energy import cell_energy, energy_fields
from bench.runners.sustain import Window, decode_chunks, summarize_windows, sustained_fields
from bench.suite import Cell
from tests.conftest import cpu_cell, quick_suite_yaml
from tests.test_hardware import FakeNvml, fake_gpu

MAX_UJ = 50_000_000  # a 50 J counter range, so a test wraps it quickly


def write(path: Path, text: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def rapl_zone(root: Path, zone: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    base = root / "class/powercap" / zone
    write(base / "name", name)
    write(base / "energy_uj", energy_uj)
    write(base / "max_energy_range_uj", max_uj)
    return base / "energy_uj"


class Clock:
    """A fake clock the fakes below advance: timings and energies come out exactly as computed by hand."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Package:
    """A simulated RAPL package counter drawing `watts` as the fake clock advances (wrapping at MAX_UJ)."""

    def __init__(self, path: Path, clock: Clock, start_uj: int) -> None:
        self.path, self.clock, self.uj = path, clock, start_uj

    def run(self, seconds: float, watts: float) -> None:
        self.clock.t += seconds
        self.uj = (self.uj + round(seconds * watts * 1e6)) % MAX_UJ
        write(self.path, self.uj)


# ------------------------------------------------------------------------------------ sensors


def test_rapl_counter_sums_package_and_dram_and_undoes_the_wrap(tmp_path: Path) -> None:
    package = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 49_900_000)
    rapl_zone(tmp_path, "intel-rapl:0:0", "core", 5)  # inside the package: not counted again
    dram = rapl_zone(tmp_path, "intel-rapl:0:1", "dram", 100_000, max_uj=500_000)
    domains, why = rapl_domains(tmp_path)
    assert why == "" and sorted(d.name for d in domains) == ["dram", "package-0"]
    counter = RaplCounter(domains)
    assert counter.source == "rapl_dram+package"
    write(package, 150_000)  # wrapped: 100,000 to the top + 150,000 = 0.25 J
    write(dram, 50_000)  # wrapped: 400,000 + 50,000 = 0.45 J
    assert counter.joules() == pytest.approx(0.70)
    write(package, 1_150_000)  # +1 J, no wrap
    assert counter.joules() == pytest.approx(1.70)


def test_root_only_rapl_names_the_permission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    energy = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 1)
    energy.chmod(0o400)
    if os.geteuid() == 0:  # root reads every file: refuse this one as the kernel refuses a user
        monkeypatch.setattr(sensors.os, "access", lambda path, mode: Path(path) != energy)
    domains, why = rapl_domains(tmp_path)
    assert domains == []
    assert why.startswith("not available:") and "root only" in why and "chmod o+r" in why


def test_absent_sensors_say_why(tmp_path: Path) -> None:
    """These VMs: no powercap, hwmon, thermal zones or cpufreq."""
    assert rapl_domains(tmp_path)[1].startswith("not available: no RAPL domains")
    for reading in (
        sensors.cpu_temperature(tmp_path),
        sensors.fan_rpm(tmp_path),
        sensors.cpu_frequency_mhz(tmp_path),
        sensors.cpu_throttle_count(tmp_path),
    ):
        assert reading.value is None and reading.why.startswith("not available: ")


def test_hwmon_thermal_zones_cpufreq_and_throttle_counts(tmp_path: Path) -> None:
    write(tmp_path / "class/hwmon/hwmon0/temp1_input", 45_000)
    write(tmp_path / "class/hwmon/hwmon1/temp2_input", 71_500)
    write(tmp_path / "class/thermal/thermal_zone0/temp", 60_000)
    write(tmp_path / "class/hwmon/hwmon1/fan1_input", 1200)
    write(tmp_path / "class/hwmon/hwmon1/fan2_input", 800)
    cpus = tmp_path / "devices/system/cpu"
    write(cpus / "cpu0/cpufreq/scaling_cur_freq", 2_000_000)  # kHz
    write(cpus / "cpu1/cpufreq/scaling_cur_freq", 3_000_000)
    write(cpus / "cpu0/thermal_throttle/core_throttle_count", 3)
    write(cpus / "cpu1/thermal_throttle/core_throttle_count", 4)
    assert sensors.cpu_temperature(tmp_path).value == 71.5
    assert sensors.fan_rpm(tmp_path).value == 1200
    assert sensors.cpu_frequency_mhz(tmp_path).value == 2500
    assert sensors.cpu_throttle_count(tmp_path).value == 7

    with StateReader("cpu", 0, tmp_path) as reader:
        assert reader.read().reasons == ()
        write(cpus / "cpu1/thermal_throttle/core_throttle_count", 5)  # throttled since the last read
        state = reader.read()
    assert state.reasons == (CPU_THROTTLE,) and state.clock_mhz == 2500 and state.temp_c == 71.5
    assert set(reader.missing) == {"power"} and reader.missing["power"].startswith("not available: no RAPL")


def test_nvml_reasons_in_words() -> None:
    assert nvml.clock_event_names(0x20 | 0x04 | 0x01) == ["power cap", "thermal slowdown"]
    assert nvml.clock_event_names(0x08 | 0x01, slowdown_only=False) == ["GPU idle", "HW slowdown"]
    assert nvml.clock_event_names(None) == []


# ------------------------------------------------------------------------------------ energy


class FakeCpuEngine(SpeedEngine):
    """Decode steps of 0.1 s at 30 W (prefill 0.5 s at 30 W) on the simulated package."""

    backend = "fake"

    def __init__(self, package: Package) -> None:
        self.package = package

    def load(self) -> Any:
        return None

    def start_context(self, cell: Cell) -> dict[str, Any]:
        return {}

    def n_vocab(self) -> int:
        return 100

    def bos_token(self) -> int | None:
        return 1

    def reset(self, depth_tokens: np.ndarray) -> None:
        pass

    def truncate(self, n_keep: int) -> bool:
        return True

    def prefill(self, tokens: np.ndarray) -> float:
        self.package.run(0.5, 30.0)
        return 0.5

    def decode(self, tokens: np.ndarray) -> list[float]:
        for _ in range(len(tokens)):
            self.package.run(0.1, 30.0)
        return [0.1] * len(tokens)


def test_cpu_energy_gross_and_net_of_idle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cell_energy_module, "_IDLE_W", {})
    clock = Clock()
    package = Package(rapl_zone(tmp_path, "intel-rapl:0", "package-0", 45_000_000), clock, 45_000_000)
    cell = cpu_cell("fake", "Q4_0", gen_tokens=10, repetitions=2, warmup=1)
    engine = FakeCpuEngine(package)

    energy = cell_energy(cell, None, root=tmp_path, sleep=lambda s: package.run(s, 10.0), clock=clock)
    assert energy.source == "rapl_package" and energy.idle_w == pytest.approx(10.0)  # 2 s at 10 W at rest
    warmups, measured = measure_cell(engine, cell, energy=energy.meter)  # the counter wraps on the way
    speed = repetition_fields(cell, warmups, measured)
    fields = energy_fields(energy, speed)
    # Each token: 0.1 s at 30 W = 3 J gross; at rest it would have drawn 0.1 s x 10 W = 1 J: 2 J net.
    assert speed["energy_j_per_decode_token"] == pytest.approx(3.0)
    assert fields["energy_net_j_per_decode_token"] == pytest.approx(2.0)
    assert fields["avg_power_w"] == pytest.approx(30.0)
    assert fields["energy_source"] == "rapl_package" and fields["idle_power_w"] == pytest.approx(10.0)


def test_no_energy_counter_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cell_energy_module, "_IDLE_W", {})
    energy = cell_energy(cpu_cell("fake", "Q4_0"), None, root=tmp_path)
    assert energy.meter is None and energy.source.startswith("not available: no RAPL domains")
    assert energy_fields(energy, {})["energy_net_j_per_decode_token"] is None


def test_counter_meter_averages_power_over_its_windows(tmp_path: Path) -> None:
    clock = Clock()
    package = Package(rapl_zone(tmp_path, "intel-rapl:0", "package-0", 0), clock, 0)
    meter = CounterMeter(RaplCounter(rapl_domains(tmp_path)[0]), clock)
    for seconds, watts in ((1.0, 20.0), (3.0, 15.0)):  # each read within the 50 J range of the counter
        meter.mark()
        package.run(seconds, watts)
        meter.energy_j_since_mark()
        package.run(5.0, 9.0)  # between windows: not counted
    assert meter.avg_power_w == pytest.approx((20 + 45) / 4)


# ------------------------------------------------------------------------------------ sustained


class ThrottlingNvml(FakeNvml):
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetClockInfo(self, h: dict[str, Any], clock: int) -> int:
        return h["sm_mhz"] if clock == self.NVML_CLOCK_SM else h["mem_mhz"]

    def nvmlDeviceGetTemperature(self, h: dict[str, Any], sensor: int) -> int:
        return h["temp_c"]


def throttling_chunks(gpu: dict[str, Any], clock: Clock) -> Iterator[tuple[int, float]]:
    """0.5 s chunks: 100 tok/s at 300 W, cool, for 5 s; then 80 tok/s at 250 W, hot, power-capped."""
    for i in range(40):
        if i * 0.5 >= 5.0:
            gpu.update(sm_mhz=1410, temp_c=88, reasons=0x20 | 0x04 | 0x01)
        watts, tokens = (300, 50) if i * 0.5 < 5.0 else (250, 40)
        clock.t += 0.5
        gpu["energy_mj"] += int(watts * 0.5 * 1000)
        yield tokens, 0.5


def test_gpu_that_throttles_halfway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(sm_mhz=1980, mem_mhz=3201, temp_c=70, reasons=0x0)
    fake = ThrottlingNvml(gpu)
    monkeypatch.setattr(nvml, "pynvml", fake)
    clock = Clock()
    cell = cpu_cell("fake", "Q4_0", device_id="h200", device_kind="cuda", sustain_s=10, sustain_window_s=1)
    fields = sustained_fields(throttling_chunks(gpu, clock), cell, "fake", clock=clock)
    assert fake.refs == 0
    assert fields["sustain_burst_tok_s"] == pytest.approx(100.0)
    assert fields["sustain_tok_s"] == pytest.approx(80.0)  # median of the last 3 of 10 windows
    assert fields["sustain_ratio"] == pytest.approx(0.8)
    assert fields["sustain_throttle_s"] == pytest.approx(6.0)  # the end of the first slow window
    assert fields["sustain_throttle_reasons"] == "power cap; thermal slowdown"  # idle is not a throttle
    assert fields["sustain_t_s_samples"] == ";".join(str(t) for t in range(1, 11))
    assert fields["sustain_temp_c_samples"] == ";".join(["70"] * 5 + ["88"] * 5)
    assert fields["sustain_clock_mhz_samples"] == ";".join(["1980"] * 5 + ["1410"] * 5)
    assert [float(p) for p in fields["sustain_power_w_samples"].split(";")] == pytest.approx([300] * 5 + [250] * 5)
    assert fields["sustain_sensors"] == ""


def test_windows_summary_without_throttling() -> None:
    windows = [Window(float(i + 1), tok_s, MachineState()) for i, tok_s in enumerate([50, 49, 51, 48, 50, 52])]
    fields = summarize_windows(windows)
    assert fields["sustain_tok_s"] == 51.0 and fields["sustain_ratio"] == pytest.approx(51 / 50)
    assert fields["sustain_throttle_s"] is None and fields["sustain_throttle_reasons"] == ""
    assert fields["sustain_temp_c_samples"] == ""  # no sensor: no series
    assert summarize_windows([]) == {}


def test_cpu_sustained_mode_without_sensors_still_records_windows(tmp_path: Path) -> None:
    """A SpeedEngine through decode_chunks, on a machine with no sensors (these VMs)."""
    clock = Clock()
    package = Package(tmp_path / "unused", clock, 0)
    cell = cpu_cell("fake", "Q4_0", gen_tokens=20, sustain_s=6, sustain_window_s=2)  # 0.1 s steps: a chunk each
    fields = sustained_fields(decode_chunks(FakeCpuEngine(package), cell), cell, "fake", root=tmp_path, clock=clock)
    assert fields["sustain_tok_s_samples"] == "10;10;10" and fields["sustain_ratio"] == pytest.approx(1.0)
    missing = fields["sustain_sensors"]
    for name in ("power", "CPU frequency", "CPU temperature", "fan"):
        assert f"{name}: not available: " in missing


def test_an_engine_without_sustain_chunks_says_so() -> None:
    fields = sustained_fields(None, cpu_cell("server", "Q4_0", sustain_s=5), "server")
    assert fields == {"sustain_sensors": "sustained mode: not available: the server engine has no sustain_chunks"}


def test_bench_hw_lists_each_sensor_readable_or_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rapl_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    write(tmp_path / "class/hwmon/hwmon0/temp1_input", 45_000)
    monkeypatch.setattr(nvml, "pynvml", ThrottlingNvml(fake_gpu(sm_mhz=1980, mem_mhz=3201, temp_c=70)))
    inventory = dict(sensor_inventory(tmp_path))
    assert inventory["CPU energy (RAPL)"] == "package-0 (intel-rapl:0)"
    assert inventory["CPU temperature (hwmon, thermal zones)"] == "45 °C"
    assert inventory["CPU frequency (cpufreq)"].startswith("not available: no cpufreq")
    assert inventory["cuda:0 SM clock (NVML)"] == "readable"
    monkeypatch.setattr(nvml, "pynvml", None)
    assert dict(sensor_inventory(tmp_path))[
        "GPU clocks, temperature, power, energy, throttle reasons (NVML)"
    ].startswith("NVML not available")


def test_gpu_idle_power_from_the_nvml_counter(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU cell keeps the worker's sampler as its meter; idle comes from the board's counter, once per worker."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(cell_energy_module, "_IDLE_W", {})
    gpu = fake_gpu()
    fake = ThrottlingNvml(gpu)
    monkeypatch.setattr(nvml, "pynvml", fake)
    clock = Clock()

    def rest(seconds: float) -> None:  # 60 W at rest
        clock.t += seconds
        gpu["energy_mj"] += int(60 * seconds * 1000)

    sampler = type("Sampler", (), {"source": "nvml_board"})()
    cell = cpu_cell("fake", "Q4_0", device_id="h200", device_kind="cuda")
    energy = cell_energy(cell, sampler, sleep=rest, clock=clock)
    assert energy.meter is sampler and energy.source == "nvml_board" and energy.idle_w == pytest.approx(60.0)
    assert fake.refs == 0
    again = cell_energy(cell, sampler, sleep=lambda s: pytest.fail("idle is taken once per worker"), clock=clock)
    assert again.idle_w == pytest.approx(60.0)
    # 2 repetitions at 2.0 and 3.5 J per token, decoding 40 and 20 tok/s: net = J - 60 W / (tok/s)
    speed = {"energy_j_per_decode_token_samples": "2.0;3.5", "decode_tok_s_samples": "40;20"}
    fields = energy_fields(energy, speed)
    assert fields["energy_net_j_per_decode_token"] == pytest.approx(((2.0 - 1.5) + (3.5 - 3.0)) / 2)
    assert "avg_power_w" not in fields  # the worker's sampler reports it


def test_sustain_settings_are_checked(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(quick_suite_yaml(workload="workload: {prompt_tokens: [8], gen_tokens: 4, sustain_window_s: 10}"))
    assert load_run_suite(suite, RunOptions(sustain_s=30)).workload.sustain_s == 30
    for seconds, expected in ((5, "shorter than one sustain_window_s (10 s)"), (-1, "greater than or equal to 0")):
        with pytest.raises(BenchError, match=re.escape(expected)):
            load_run_suite(suite, RunOptions(sustain_s=seconds))
    suite.write_text(quick_suite_yaml(workload="workload: {prompt_tokens: [8], gen_tokens: 4, sustain_s: 3}"))
    with pytest.raises(BenchError, match="sustain_s"):
        load_run_suite(suite, RunOptions())


def test_a_failing_engine_keeps_the_windows_it_made(tmp_path: Path) -> None:
    def chunks() -> Iterator[tuple[int, float]]:
        yield from [(10, 1.0)] * 3
        raise RuntimeError("llama_decode returned 1")

    cell = cpu_cell("fake", "Q4_0", sustain_s=10, sustain_window_s=1)
    fields = sustained_fields(chunks(), cell, "fake", root=tmp_path)
    assert fields["sustain_tok_s_samples"] == "10;10;10"
    assert fields["sustain_sensors"].startswith(
        "sustained mode stopped after 3 of 10 windows: RuntimeError: llama_decode returned 1; power: not available"
    )

"""bench.hardware: fingerprint, device availability, system warnings, GPU sampling.

NVML is replaced by FakeNvml where a GPU is needed, so the GPU code paths run on CPU-only machines too;
the tests on the real machine are written to pass with or without an NVIDIA GPU.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

import bench
from bench import hardware
from bench.hardware import BackendSoftware, Fingerprint, GpuInfo, GpuSampler, SystemWarning, cpu, noise, nvml
from bench.runners.llamacpp import software

GIB = 2**30
ROW_KEYS = set(hardware.ROW_FIELDS)  # the machine columns, as MachineColumns declares them
GPU_KEYS = (
    "gpu_name",
    "gpu_vram_total_bytes",
    "gpu_vram_free_bytes",
    "gpu_driver",
    "cuda_version",
    "gpu_power_limit_w",
)


# ------------------------------------------------------------------------------------ fakes


class FakeNvmlError(Exception):
    pass


def fake_gpu(name: str = "NVIDIA H200", uuid: str = "GPU-aaaa1111", **kw: Any) -> dict[str, Any]:
    gpu = {
        "name": name,
        "uuid": uuid,
        "total": 141 * GIB,
        "used": 1 * GIB,
        "procs": [],
        "energy_mj": 1_000_000,
        "power_mw": 200_000,
        "persistence": 1,
        "reasons": 0x1,
    }
    gpu.update(kw)
    return gpu


class FakeNvml:
    """The slice of pynvml that bench.hardware uses; handles are the gpu dicts, mutable by the test."""

    NVML_CLOCK_MEM = 2
    NVML_FEATURE_DISABLED = 0
    NVMLError = FakeNvmlError

    def __init__(self, *gpus: dict[str, Any]) -> None:
        self.gpus = list(gpus)
        self.refs = 0  # nvmlInit minus nvmlShutdown: must be back to 0 after every use

    def nvmlInit(self) -> None:
        self.refs += 1

    def nvmlShutdown(self) -> None:
        self.refs -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> dict[str, Any]:
        return self.gpus[i]

    def nvmlDeviceGetName(self, h: dict[str, Any]) -> bytes:
        return h["name"].encode()  # old pynvml returns bytes

    def nvmlDeviceGetUUID(self, h: dict[str, Any]) -> str:
        return h["uuid"]

    def nvmlDeviceGetMemoryInfo(self, h: dict[str, Any]) -> SimpleNamespace:
        return SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"])

    def nvmlDeviceGetEnforcedPowerLimit(self, h: dict[str, Any]) -> int:
        return 700_000

    def nvmlDeviceGetMemoryBusWidth(self, h: dict[str, Any]) -> int:
        return 6144

    def nvmlDeviceGetMaxClockInfo(self, h: dict[str, Any], clock: int) -> int:
        assert clock == self.NVML_CLOCK_MEM
        return 3201

    def nvmlDeviceGetComputeRunningProcesses(self, h: dict[str, Any]) -> list[SimpleNamespace]:
        return list(h["procs"])

    def nvmlDeviceGetTotalEnergyConsumption(self, h: dict[str, Any]) -> int:
        if h["energy_mj"] is None:
            raise FakeNvmlError("Not Supported")
        return h["energy_mj"]

    def nvmlDeviceGetPowerUsage(self, h: dict[str, Any]) -> int:
        return h["power_mw"]

    def nvmlDeviceGetPersistenceMode(self, h: dict[str, Any]) -> int:
        return h["persistence"]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: dict[str, Any]) -> int:
        return h["reasons"]


def proc(pid: int, used: int | None) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=used)


H200 = GpuInfo(
    index=0,
    name="NVIDIA H200",
    uuid="GPU-aaaa1111",
    vram_total_bytes=141 * GIB,
    vram_free_bytes=140 * GIB,
    driver="550.54.15",
    cuda_version="12.4",
    power_limit_w=700.0,
    memory_bus_width_bits=6144,
    max_memory_clock_mhz=3201,
)


def make_fp(**overrides: Any) -> Fingerprint:
    fields: dict[str, Any] = {
        "host": "box",
        "os": "Linux-6.8",
        "cpu_brand": "AMD EPYC",
        "cpu_arch": "x86_64",
        "cpu_physical_cores": 8,
        "cpu_logical_cores": 16,
        "cpu_flags": ("avx", "avx2", "fma"),
        "ram_total_bytes": 64 * GIB,
        "ram_available_bytes": 60 * GIB,
        "gpus": (H200,),
        "nvml_status": "ok",
        "python_version": "3.11.7",
        "bench_version": "0.1.0",
        "llama_cpp_python_version": "0.3.36",
        "llama_cpp_build": "CPU: AVX2",
        "llama_cpp_gpu_offload": True,
        "torch_version": "",
    } | overrides
    # The backends' software, given here by the short names these tests use.
    llamacpp = BackendSoftware(
        "llamacpp",
        fields.pop("llama_cpp_python_version"),
        fields.pop("llama_cpp_build"),
        fields.pop("llama_cpp_gpu_offload"),
    )
    torch = BackendSoftware("torch", fields.pop("torch_version"))
    return Fingerprint(**fields, backends=(llamacpp, torch))


@pytest.fixture(scope="module")
def real_fp() -> Fingerprint:
    return hardware.detect()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """system_warnings() without the 0.5 s load watch, reading CPU sysfs from an empty fake tree."""
    monkeypatch.setattr(noise, "LOAD_SAMPLE_S", 0.01)
    monkeypatch.setattr(cpu, "CPU_SYSFS", tmp_path)
    return tmp_path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---------------------------------------------------------------------------------- detect


def test_detect_on_this_machine_is_sane(real_fp: Fingerprint) -> None:
    fp = real_fp
    assert fp.host and fp.os and fp.cpu_brand and fp.cpu_arch
    assert 1 <= fp.cpu_physical_cores <= fp.cpu_logical_cores
    assert fp.ram_total_bytes > fp.ram_available_bytes > 0
    assert set(fp.cpu_flags) <= set(cpu.KNOWN_CPU_FLAGS)
    assert list(fp.cpu_flags) == [f for f in cpu.KNOWN_CPU_FLAGS if f in fp.cpu_flags]  # ordered, unique
    assert fp.python_version == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    assert fp.bench_version == bench.__version__
    if fp.nvml_status == "ok":
        assert [g.index for g in fp.gpus] == list(range(len(fp.gpus)))
        assert all(g.name and g.vram_total_bytes >= g.vram_free_bytes > 0 for g in fp.gpus)
    else:  # no NVIDIA driver here: no GPUs, and the status says why
        assert fp.gpus == ()
        assert fp.nvml_status.startswith("NVML not available: ")
        assert len(fp.nvml_status) > len("NVML not available: ") + 3


def test_detect_reads_flags_the_kernel_reports(real_fp: Fingerprint) -> None:
    proc_cpuinfo = Path("/proc/cpuinfo")
    if not proc_cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo")
    kernel_flags = set()
    for line in proc_cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            kernel_flags = set(value.split())
            break
    for flag in ("avx", "avx2", "fma", "f16c", "avx512f", "sve", "i8mm"):
        assert (flag in real_fp.cpu_flags) == (flag in kernel_flags), flag


def test_detect_software_versions() -> None:
    from bench.runners.registry import detect_machine

    def dist(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return ""

    machine = detect_machine()
    assert machine.software("torch").version == dist("torch")
    llamacpp = machine.software("llamacpp")
    if dist("llama_cpp_python"):
        assert llamacpp.version == dist("llama_cpp_python")
        assert "CPU" in llamacpp.build  # system info summarised: the CPU backend is always built
        import llama_cpp

        assert llamacpp.gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    else:
        assert (llamacpp.build, llamacpp.gpu_offload) == ("", False)


def test_detect_does_not_import_torch() -> None:
    if "torch" in sys.modules:
        pytest.skip("torch already imported by another test")
    hardware.detect()
    assert "torch" not in sys.modules


def test_detect_without_pynvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "pynvml", None)
    fp = hardware.detect()
    assert fp.gpus == ()
    assert fp.nvml_status.startswith("NVML not available: ") and "nvidia-ml-py" in fp.nvml_status


def test_detect_with_nvml_reports_each_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_nvml = FakeNvml(fake_gpu(used=1 * GIB))
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    fp = hardware.detect()
    assert fp.nvml_status == "ok"
    (gpu,) = fp.gpus
    assert gpu == GpuInfo(
        index=0,
        name="NVIDIA H200",
        uuid="GPU-aaaa1111",
        vram_total_bytes=141 * GIB,
        vram_free_bytes=140 * GIB,
        driver="550.54.15",
        cuda_version="12.4",
        power_limit_w=700.0,
        memory_bus_width_bits=6144,
        max_memory_clock_mhz=3201,
    )
    assert gpu.memory_bandwidth_gbs() == pytest.approx(6144 / 8 * 3201 * 2 / 1e3)  # ~4.9 TB/s, as specified
    assert fake_nvml.refs == 0


def test_detect_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvml = FakeNvml(fake_gpu("NVIDIA A100", "GPU-aaaa1111"), fake_gpu("NVIDIA H200", "GPU-bbbb2222"))
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    fp = hardware.detect()
    assert [(g.index, g.name) for g in fp.gpus] == [(0, "NVIDIA H200")]  # CUDA calls it cuda:0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("0,7,1", [0]),  # CUDA stops at the first invalid entry
        ("1,1", [1]),
        ("GPU-bbbb", [1]),  # UUID prefix
        ("cccc3333", [2]),  # UUID without its GPU- prefix
        ("GPU-", []),  # ambiguous prefix
    ],
)
def test_cuda_visible_to_nvml(env: str | None, expected: list[int]) -> None:
    uuids = ["GPU-aaaa1111", "GPU-bbbb2222", "GPU-cccc3333"]
    assert nvml.cuda_visible_to_nvml(env, uuids) == expected


def test_cpu_flags_normalised_to_known_names() -> None:
    raw = ["sse4_2", "AVX2", "avx512vnni", "avx512_vbmi", "asimd", "asimddp", "amx-tile", "fma3", "avx"]
    assert cpu.normalise_cpu_flags(raw) == (
        "avx",
        "avx2",
        "fma",
        "avx512_vnni",
        "avx512vbmi",
        "amx_tile",
        "neon",
        "dotprod",
    )


def test_arm_cpuinfo_without_model_name_asks_py_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm asimddp sve i8mm bf16\nCPU part\t: 0xd4f\n")
    monkeypatch.setattr(cpu, "PROC_CPUINFO", fake)
    monkeypatch.setattr(
        cpu, "cpuinfo", SimpleNamespace(get_cpu_info=lambda: {"brand_raw": "Neoverse-V2", "flags": ["sve"]})
    )
    monkeypatch.setattr(cpu.platform, "system", lambda: "Linux")
    assert cpu.cpu_brand_and_flags() == ("Neoverse-V2", ("neon", "sve", "dotprod", "i8mm"))


def test_cpu_identity_without_any_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cpu, "PROC_CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(cpu, "cpuinfo", None)
    monkeypatch.setattr(cpu.platform, "system", lambda: "Linux")
    monkeypatch.setattr(cpu.platform, "processor", lambda: "")
    assert cpu.cpu_brand_and_flags() == ("unknown", ())
    fp = hardware.detect()  # and detect() still completes
    assert fp.cpu_brand == "unknown" and fp.ram_total_bytes > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("CPU : SSE3 = 1 | AVX = 1 | AVX512 = 0 | OPENMP = 1 | ", "CPU: SSE3 AVX OPENMP"),
        (
            "CUDA : ARCHS = 800,900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | CPU : AVX2 = 1 | ",
            "CUDA: ARCHS=800,900 USE_GRAPHS PEER_MAX_BATCH_SIZE=128; CPU: AVX2",
        ),
        ("AVX = 1 | AVX_VNNI = 0 | NEON = 0 | ", "AVX"),  # old format, no backend names
        ("", ""),
    ],
)
def test_summarise_llama_system_info(text: str, expected: str) -> None:
    assert software.summarise_system_info(text) == expected


# ---------------------------------------------------------------------- row_fields and id


def test_row_fields_for_cuda_device() -> None:
    row = make_fp().row_fields("cuda", 0)
    assert set(row) == ROW_KEYS
    assert [row[k] for k in GPU_KEYS] == ["NVIDIA H200", 141 * GIB, 140 * GIB, "550.54.15", "12.4", 700.0]
    assert row["gpu_count"] == 1
    assert row["cpu_flags"] == "avx avx2 fma"
    assert row["fingerprint"] == make_fp().fingerprint_id()


@pytest.mark.parametrize(("kind", "index"), [("cpu", 0), ("cuda", 3)])
def test_row_fields_without_that_gpu_leaves_gpu_columns_blank(kind: str, index: int) -> None:
    row = make_fp().row_fields(kind, index)
    assert set(row) == ROW_KEYS
    assert [row[k] for k in GPU_KEYS] == ["", None, None, "", "", None]
    assert row["gpu_count"] == 1 and row["host"] == "box"


def test_row_fields_fit_the_result_schema() -> None:
    from bench.results import ResultRow  # extra="forbid": a misnamed column fails here

    ResultRow(**make_fp().row_fields("cuda", 0))


def test_fingerprint_id_is_stable_and_ignores_free_memory() -> None:
    fp = make_fp()
    fid = fp.fingerprint_id()
    assert fid == make_fp().fingerprint_id() and len(fid) == 12 and int(fid, 16) >= 0
    busier = make_fp(
        ram_available_bytes=1 * GIB, gpus=(dataclasses.replace(H200, vram_free_bytes=2 * GIB),), torch_version="2.13.0"
    )
    assert busier.fingerprint_id() == fid
    for changed in (make_fp(ram_total_bytes=32 * GIB), make_fp(host="other"), make_fp(gpus=())):
        assert changed.fingerprint_id() != fid


def test_fingerprint_id_survives_software_updates_and_memtotal_jitter() -> None:
    """Issue 13 item 4: a driver, kernel or bench update must not make `compare` refuse to compare."""
    fid = make_fp().fingerprint_id()
    updated = make_fp(
        os="Linux-6.11",
        bench_version="0.2.0",
        python_version="3.12.1",
        llama_cpp_python_version="0.3.40",
        llama_cpp_build="CUDA: ARCHS=900",
        torch_version="2.14.0",
        gpus=(dataclasses.replace(H200, driver="560.35.03", cuda_version="12.6"),),
    )
    assert updated.fingerprint_id() == fid
    for jitter in (-5 * 2**20, -1, 3 * 2**20):  # a new kernel reserves a few MiB more or less
        assert make_fp(ram_total_bytes=64 * GIB + jitter).fingerprint_id() == fid


@pytest.mark.parametrize(
    "change",
    [
        {"cpu_brand": "Intel Xeon Platinum 8480+"},
        {"cpu_physical_cores": 16},
        {"cpu_logical_cores": 8},
        {"ram_total_bytes": 63 * GIB},
        {"gpus": (H200, dataclasses.replace(H200, index=1))},
    ],
)
def test_fingerprint_id_changes_with_the_hardware(change: dict[str, Any]) -> None:
    assert make_fp(**change).fingerprint_id() != make_fp().fingerprint_id()


def test_fingerprint_id_recomputes_from_a_row() -> None:
    """compare recomputes ids from CSV rows (strings, as pandas may read them): same id as live."""
    row = make_fp().row_fields("cuda", 0)
    assert hardware.stable_fingerprint(row) == row["fingerprint"]
    as_read = {name: str(row[name]) for name in hardware.STABLE_HARDWARE_COLUMNS}
    as_read["ram_total_bytes"] = f"{float(row['ram_total_bytes']):.1f}"
    assert hardware.stable_fingerprint(as_read) == row["fingerprint"]
    assert hardware.stable_fingerprint(as_read | {"cpu_physical_cores": "4"}) != row["fingerprint"]


# ----------------------------------------------------------------------- system_warnings


def names(warnings: list[SystemWarning]) -> set[str]:
    return {w.name for w in warnings}


def test_governor_warning(quick: Path) -> None:
    write(quick / "cpu0/cpufreq/scaling_governor", "powersave\n")
    write(quick / "cpu1/cpufreq/scaling_governor", "performance\n")
    warnings = hardware.system_warnings(make_fp(gpus=(), nvml_status="NVML not available: x"))
    assert all(isinstance(w, SystemWarning) and w.message and w.fix for w in warnings)
    (governor,) = [w for w in warnings if w.name == "cpu_governor"]
    assert "powersave" in governor.message and "1 of 2" in governor.message
    assert governor.fix == "sudo cpupower frequency-set -g performance"


def test_no_governor_warning_when_performance(quick: Path) -> None:
    write(quick / "cpu0/cpufreq/scaling_governor", "performance\n")
    assert "cpu_governor" not in names(hardware.system_warnings())


@pytest.mark.parametrize(
    ("file", "value", "warned"),
    [
        ("intel_pstate/no_turbo", "0", True),
        ("intel_pstate/no_turbo", "1", False),
        ("cpufreq/boost", "1", True),
        ("cpufreq/boost", "0", False),
    ],
)
def test_boost_warning(quick: Path, file: str, value: str, warned: bool) -> None:
    write(quick / file, value + "\n")
    warnings = [w for w in hardware.system_warnings() if w.name == "cpu_boost"]
    assert bool(warnings) == warned
    if warned:
        assert str(quick / file) in warnings[0].fix


def test_load_ram_swap_and_heat_warnings(quick: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    psutil = noise.psutil
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: 97.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=16 * GIB, available=1 * GIB))
    monkeypatch.setattr(psutil, "swap_memory", lambda: SimpleNamespace(used=1 * GIB))
    sensor = SimpleNamespace(label="Package id 0", current=98.0, high=100.0, critical=105.0)
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {"coretemp": [sensor]}, raising=False)
    warnings = {w.name: w for w in hardware.system_warnings()}
    assert {"cpu_load", "low_ram", "swap_in_use", "cpu_thermal"} <= set(warnings)
    assert "97%" in warnings["cpu_load"].message
    assert "1.0 GiB of 16.0 GiB" in warnings["low_ram"].message
    assert "1024 MiB" in warnings["swap_in_use"].message
    assert "coretemp/Package id 0 98 C" in warnings["cpu_thermal"].message
    assert all(w.fix for w in warnings.values())


def test_healthy_readings_give_no_warnings(quick: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    psutil = noise.psutil
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None, percpu=False: 3.0)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=16 * GIB, available=12 * GIB))
    monkeypatch.setattr(psutil, "swap_memory", lambda: SimpleNamespace(used=10 * 2**20))
    cool = SimpleNamespace(label="", current=55.0, high=20.0, critical=None)  # bogus threshold: ignored
    monkeypatch.setattr(psutil, "sensors_temperatures", lambda: {"k10temp": [cool]}, raising=False)
    monkeypatch.setattr(nvml, "pynvml", None)
    assert hardware.system_warnings() == []


def test_unreadable_sources_are_skipped(quick: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("no access")

    write(quick / "cpu0/cpufreq/scaling_governor", "powersave\n")
    for name in ("cpu_percent", "virtual_memory", "swap_memory", "process_iter"):
        monkeypatch.setattr(noise.psutil, name, broken)
    monkeypatch.setattr(noise.psutil, "sensors_temperatures", broken, raising=False)
    assert names(hardware.system_warnings()) == {"cpu_governor"}  # the one readable check still reports


def test_gpu_warnings(quick: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    busy = fake_gpu(procs=[proc(os.getpid(), GIB), proc(999_999, 2 * GIB)], persistence=0, reasons=0x40 | 0x1)
    fake_nvml = FakeNvml(busy)
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    warnings = {w.name: w for w in hardware.system_warnings() if w.name.startswith("gpu_")}
    assert set(warnings) == {"gpu_throttle", "gpu_busy", "gpu_persistence"}
    assert "HW thermal slowdown" in warnings["gpu_throttle"].message
    assert "1 other process" in warnings["gpu_busy"].message and "pid 999999, 2048 MiB" in warnings["gpu_busy"].message
    assert warnings["gpu_persistence"].fix == "sudo nvidia-smi -pm 1"
    assert "cuda:0 (NVIDIA H200)" in warnings["gpu_persistence"].message
    assert fake_nvml.refs == 0

    busy.update(procs=[proc(os.getpid(), GIB)], persistence=1, reasons=0x1)  # idle, ours only: fine
    assert not [w for w in hardware.system_warnings() if w.name.startswith("gpu_")]


# ---------------------------------------------------------------------------- GpuSampler


def assert_noop(sampler: GpuSampler) -> None:
    with sampler as s:
        s.mark()
        assert s.energy_j_since_mark() is None
    assert (s.peak_vram_bytes, s.avg_power_w, s.energy_j_since_mark()) == (None, None, None)


def test_sampler_is_a_noop_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_noop(GpuSampler("cpu", 0))
    monkeypatch.setattr(nvml, "pynvml", None)
    assert_noop(GpuSampler("cuda", 0))


def test_sampler_is_a_noop_on_this_machine_without_gpu(real_fp: Fingerprint) -> None:
    if real_fp.gpus:
        pytest.skip("this machine has a GPU")
    assert_noop(GpuSampler("cuda", 0))


def test_sampler_is_a_noop_for_an_absent_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_nvml = FakeNvml(fake_gpu())
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    assert_noop(GpuSampler("cuda", 1))
    assert fake_nvml.refs == 0


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "sampler did not pick the change up"
        time.sleep(0.005)


def test_sampler_with_energy_counter_and_per_process_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(energy_mj=1_000_000)
    fake_nvml = FakeNvml(gpu)
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    with GpuSampler("cuda", 0, interval_s=0.005) as s:
        # Another process's 10 GiB raises device use, but only our own 3 GiB counts.
        gpu.update(used=14 * GIB, procs=[proc(os.getpid(), 3 * GIB), proc(4242, 10 * GIB)])
        wait_for(lambda: s.peak_vram_bytes == 3 * GIB)
        gpu.update(used=2 * GIB, procs=[proc(os.getpid(), 1 * GIB)])
        gpu["energy_mj"] = 2_000_000
        s.mark()  # the measured window starts here
        gpu["energy_mj"] = 2_005_000
        assert s.energy_j_since_mark() == pytest.approx(5.0)
    gpu["energy_mj"] = 9_000_000  # after exit the result is frozen
    assert s.peak_vram_bytes == 3 * GIB
    assert s.energy_j_since_mark() == pytest.approx(5.0)
    assert s.avg_power_w is not None and s.avg_power_w > 0
    assert fake_nvml.refs == 0


def test_sampler_falls_back_to_device_memory_and_power_integration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(energy_mj=None, power_mw=200_000, used=1 * GIB)  # no energy counter, no per-process memory
    monkeypatch.setattr(nvml, "pynvml", FakeNvml(gpu))
    with GpuSampler("cuda", 0, interval_s=0.005) as s:
        gpu["used"] = 4 * GIB
        wait_for(lambda: s.peak_vram_bytes == 3 * GIB)  # used minus used at start
        gpu["used"] = 2 * GIB
        time.sleep(0.05)
        before_mark = time.perf_counter()
        s.mark()
        after_mark = time.perf_counter()
        time.sleep(0.1)
        before_read = time.perf_counter()
        energy = s.energy_j_since_mark()
        after_read = time.perf_counter()
        assert energy is not None
        assert 200 * (before_read - after_mark) <= energy <= 200 * (after_read - before_mark)  # 200 W from the mark
    assert s.peak_vram_bytes == 3 * GIB
    assert s.avg_power_w == pytest.approx(200.0, rel=0.01)


def test_sampler_baseline_taken_before_load_counts_weights_and_kv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12 item 3: in a PID namespace NVML cannot attribute memory to us; the peak must still include
    the weights loaded before the sampler started, measured from the pre-load baseline."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(used=1 * GIB, procs=[])  # another tenant's 1 GiB; our process never appears in the list
    fake_nvml = FakeNvml(gpu)
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    sampler = GpuSampler.before_load("cuda", 0, interval_s=0.005)
    baseline = hardware.vram_used_bytes("cuda", 0)
    assert sampler.baseline_used_bytes == baseline == 1 * GIB
    gpu["used"] = 5 * GIB  # the model's weights, loaded before the cell starts
    with sampler as s:
        gpu["used"] = 6 * GIB  # KV cache and compute buffers during the cell
        wait_for(lambda: s.peak_vram_bytes == 5 * GIB)
        gpu["used"] = 5 * GIB
    assert s.peak_vram_bytes == 5 * GIB  # weights + KV, not the 1 GiB a post-load baseline would give
    with GpuSampler("cuda", 0, baseline_used_bytes=baseline) as second_cell:  # same load, next cell
        pass
    assert second_cell.peak_vram_bytes == 4 * GIB
    with GpuSampler("cuda", 0) as post_load:  # without a pre-load baseline: only what grows after entering
        gpu["used"] = 6 * GIB
        wait_for(lambda: post_load.peak_vram_bytes == 1 * GIB)
    assert fake_nvml.refs == 0


def test_sampler_prefers_the_per_process_figure_over_the_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(used=1 * GIB)
    monkeypatch.setattr(nvml, "pynvml", FakeNvml(gpu))
    sampler = GpuSampler.before_load("cuda", 0, interval_s=0.005)
    gpu.update(used=9 * GIB, procs=[proc(os.getpid(), 4 * GIB), proc(4242, 4 * GIB)])  # we and a neighbour
    with sampler as s:
        wait_for(lambda: s.peak_vram_bytes == 4 * GIB)
    assert s.peak_vram_bytes == 4 * GIB  # ours from NVML, not 9 - 1 GiB of device use


def test_vram_used_bytes_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_nvml = FakeNvml(fake_gpu())
    monkeypatch.setattr(nvml, "pynvml", fake_nvml)
    assert hardware.vram_used_bytes("cpu", 0) is None
    assert hardware.vram_used_bytes("cuda", 1) is None
    assert fake_nvml.refs == 0
    monkeypatch.setattr(nvml, "pynvml", None)
    assert hardware.vram_used_bytes("cuda", 0) is None
    assert GpuSampler.before_load("cuda", 0).baseline_used_bytes is None


# ---------------------------------------------------------------------------- warnings_text


def test_warnings_text_for_the_csv_column() -> None:
    governor = SystemWarning("cpu_governor", "governor is powersave", "sudo cpupower x")
    load = SystemWarning("cpu_load", "the CPU is 97% busy", "stop them")
    assert hardware.warnings_text([]) == ""
    assert hardware.warnings_text([governor]) == "cpu_governor"
    assert hardware.warnings_text([governor, load, governor]) == "cpu_governor; cpu_load"


def test_warnings_text_of_what_system_warnings_finds(quick: Path) -> None:
    write(quick / "cpu0/cpufreq/scaling_governor", "powersave\n")
    write(quick / "cpufreq/boost", "1\n")
    text = hardware.warnings_text(hardware.system_warnings(make_fp(gpus=(), nvml_status="NVML not available: x")))
    assert text.startswith("cpu_governor; cpu_boost")  # other checks read the live machine and may add more


# ------------------------------------------------------------------------------- display


def render(fp: Fingerprint, warnings: list[SystemWarning]) -> str:
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(hardware.format_fingerprint(fp, warnings))
    return console.file.getvalue()


def test_format_fingerprint_lists_fields_gpus_and_fixes() -> None:
    fp = make_fp(cpu_brand="Odd [bold]CPU[/bold]")  # markup-like text must come out literally
    text = render(fp, [SystemWarning("cpu_governor", "governor is powersave", "sudo cpupower x")])
    for expected in (
        fp.fingerprint_id(),
        "Odd [bold]CPU[/bold]",
        "8 physical, 16 logical",
        "avx avx2 fma",
        "64.0 GiB total",
        "gpu cuda:0",
        "NVIDIA H200",
        "141.0 GiB total",
        "CUDA 12.4",
        "power limit 700 W",
        "~4917 GB/s",
        "0.3.36",
        "cpu_governor",
        "fix: sudo cpupower x",
    ):
        assert expected in text, expected
    assert "none" in render(make_fp(gpus=()), []) and "gpu cuda:0" not in render(make_fp(gpus=()), [])


def test_average_power_is_over_every_repetition_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two decode windows (mark, read): 5 J and 15 J. The average is their joules over their seconds together."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpu = fake_gpu(energy_mj=1_000_000)
    monkeypatch.setattr(nvml, "pynvml", FakeNvml(gpu))
    clock = iter([10.0, 11.0, 20.0, 21.0])
    real_clock = time.perf_counter
    with GpuSampler("cuda", 0, interval_s=0.005) as s:
        monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
        s.mark()  # t = 10
        gpu["energy_mj"] = 1_005_000
        assert s.energy_j_since_mark() == pytest.approx(5.0)  # t = 11: 5 J in 1 s
        s.mark()  # t = 20
        gpu["energy_mj"] = 1_020_000
        assert s.energy_j_since_mark() == pytest.approx(15.0)  # t = 21: 15 J in 1 s
        assert s.avg_power_w == pytest.approx(10.0)  # not 15 W, the last window's
        monkeypatch.setattr(time, "perf_counter", real_clock)


def test_a_short_energy_window_is_flagged() -> None:
    from bench.runners.base import short_energy_windows

    assert short_energy_windows([1.5, 2.0]) == ""
    assert "2 decode window(s) of 0.20-0.40 s, under 1 s" in short_energy_windows([0.2, 0.4, 3.0])

"""Worker isolation units: load crashes, timeouts without orphans, exit descriptions, memory limits (the RSS
watchdog, and cgroup v2 memory.max against a fake cgroup tree in tmp_path: files in the kernel's formats).

Signals and memory limits per cell are exercised end to end in tests/faults/.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil
import pytest

from bench.execute import cgroup
from bench.execute.cgroup import BY_CGROUP, BY_WATCHDOG, ROOT_ENV, WorkerCgroup, delegation, own_cgroup
from bench.execute.local import CellOutcome, WorkGroup, run_group
from bench.execute.process import WorkerProcess, describe_exit
from bench.execute.protocol import MeasureJob
from bench.suite import Cell
from tests.faults.inject import environment


def _cell(threads: int, gen: int = 8) -> Cell:
    return Cell(
        suite="t",
        model_id="smollm2",
        quantization="Q4_1",
        backend="llamacpp",
        device_id="cpu",
        device_kind="cpu",
        device_index=0,
        threads=threads,
        n_gpu_layers=0,
        prompt_tokens=32,
        gen_tokens=gen,
        depth=0,
        repetitions=1,
        warmup=0,
    )


def _run(
    model: Path, cells: list[Cell], fault: str, monkeypatch: pytest.MonkeyPatch, **limits: float
) -> list[CellOutcome]:
    for name, value in environment(fault).items():
        monkeypatch.setenv(name, value)
    outcomes: list[CellOutcome] = []
    run_group(WorkGroup("llamacpp", model, cells, **limits), outcomes.append)
    return outcomes


def test_crash_while_loading_fails_every_cell_of_the_group(smollm2_path: Path, monkeypatch) -> None:
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "SIGSEGV@load", monkeypatch)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("while loading the model" in o.reason for o in outcomes)


def test_hanging_cell_times_out_without_leaving_processes(smollm2_path: Path, monkeypatch) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "hang@threads=1", monkeypatch, cell_timeout_s=30)
    assert outcomes[0].status == "timeout" and "30 s" in outcomes[0].reason
    assert outcomes[1].status == "ok"
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before  # no zombie or orphan worker left behind


def test_describe_exit_names_the_signal_and_the_interesting_line() -> None:
    text = describe_exit(-int(signal.SIGABRT), "load ok\nGGML_ASSERT(n <= ctx) failed\nbye\n")
    assert "SIGABRT" in text and "GGML_ASSERT(n <= ctx) failed" in text
    assert describe_exit(3, "") == "worker exited with code 3"


def _fake_cgroup(root: Path, controllers: str = "cpu io memory pids", subtree: str = "memory", procs: str = "") -> Path:
    """A cgroup v2 directory as the kernel shows it: space-separated controller lists, one PID a line."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text(subtree + "\n" if subtree else "")
    (root / "cgroup.procs").write_text(procs)
    return root


def test_memory_limit_is_on_resident_memory_not_address_space(smollm2_path: Path, monkeypatch, tmp_path: Path) -> None:
    """A cell that maps far more than the limit but keeps its resident memory under it is measured; one whose
    resident memory grows past the limit fails as out of memory, naming the figures. (The watchdog: cgroup v1.)"""
    monkeypatch.setenv(ROOT_ENV, str(_fake_cgroup(tmp_path / "v1", controllers="", subtree="")))
    outcomes = _run(smollm2_path, [_cell(1), _cell(2)], "oom@threads=2", monkeypatch, memory_limit_bytes=2**30)
    assert outcomes[0].status == "ok"  # mmap'd model + 1 GiB limit: address space is far larger than 1 GiB
    assert outcomes[1].status == "failed"
    assert outcomes[1].reason.startswith("out of memory: the worker's resident memory reached")
    assert [o.fields["memory_limit_enforced_by"] for o in outcomes] == [BY_WATCHDOG] * 2


def test_without_a_delegated_memory_controller_the_watchdog_enforces_the_limit(tmp_path: Path) -> None:
    undelegated = _fake_cgroup(tmp_path / "cg", controllers="cpu io pids", subtree="")
    found = delegation(undelegated)
    assert found.parent is None and "memory controller is not available" in found.reason
    worker = WorkerProcess(MeasureJob(backend="llamacpp", model_path="/nonexistent", cells=[]), 2**30, undelegated)
    try:
        assert worker.memory_limit_by == BY_WATCHDOG and worker.cgroup is None
        assert sorted(p.name for p in undelegated.iterdir()) == [
            "cgroup.controllers",
            "cgroup.procs",
            "cgroup.subtree_control",
        ]
    finally:
        worker.close()


def test_own_cgroup_is_the_cgroup2_mount_plus_the_unified_line(tmp_path: Path) -> None:
    """Hybrid hierarchy (v1 controllers, cgroup2 at /sys/fs/cgroup/unified), as on the machine this was written."""
    (tmp_path / "cgroup").write_text("4:memory:/some/v1/path\n0::/user.slice/bench.scope\n")
    (tmp_path / "mountinfo").write_text(
        "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n"
        "27 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:6 - cgroup2 cgroup2 rw\n"
    )
    assert own_cgroup(tmp_path) == Path("/sys/fs/cgroup/unified/user.slice/bench.scope")
    (tmp_path / "cgroup").write_text("0::/docker/abc\n")  # a container that sees its own subtree only
    (tmp_path / "mountinfo").write_text("500 400 0:27 /docker/abc /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n")
    assert own_cgroup(tmp_path) == Path("/sys/fs/cgroup")
    (tmp_path / "mountinfo").write_text("30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    assert own_cgroup(tmp_path) is None  # pure cgroup v1


def test_a_process_inside_its_cgroup_steps_into_a_leaf_before_delegating_memory(tmp_path: Path) -> None:
    parent = _fake_cgroup(tmp_path / "cg", subtree="", procs=f"{os.getpid()}\n")
    assert delegation(parent).parent == parent
    leaf = parent / f"bench-{os.getpid()}"
    assert (leaf / "cgroup.procs").read_text() == str(os.getpid())
    assert (parent / "cgroup.subtree_control").read_text() == "+memory"


def test_a_worker_cgroup_gets_the_limit_no_swap_and_the_worker(tmp_path: Path, monkeypatch) -> None:
    parent = _fake_cgroup(tmp_path / "cg")
    monkeypatch.setattr(cgroup, "remove_directory", shutil.rmtree)  # the kernel's rmdir takes the files along
    worker = WorkerProcess(MeasureJob(backend="llamacpp", model_path="/nonexistent", cells=[]), 3 * 2**30, parent)
    assert worker.memory_limit_by == BY_CGROUP and worker.cgroup is not None
    path = worker.cgroup.path
    assert path.parent == parent
    assert (path / "memory.max").read_text() == str(3 * 2**30)
    assert (path / "cgroup.procs").read_text() == str(worker.process.pid)
    assert not (path / "memory.swap.max").exists()  # the kernel has no swap accounting here: nothing to set
    worker.close()
    assert not path.exists()  # removed once the worker is gone

    swapped = tmp_path / "swap"
    swapped.mkdir()
    (swapped / "memory.swap.max").write_text("max\n")
    WorkerCgroup(swapped, 2**30)
    assert (swapped / "memory.swap.max").read_text() == "0"


def _dying_worker(tmp_path: Path, monkeypatch, fault: str, events: str) -> str:
    """A worker in a fake delegated cgroup that kills itself as `fault` says, with `events` as its memory.events."""
    for name, value in environment(fault).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cgroup, "remove_directory", shutil.rmtree)
    job = MeasureJob(backend="llamacpp", model_path="/nonexistent", cells=[_cell(1).fields()])
    worker = WorkerProcess(job, 2**30, _fake_cgroup(tmp_path / "cg"))
    try:
        assert worker.cgroup is not None
        (worker.cgroup.path / "memory.events").write_text(events)
        while worker.next_event(60) is not None:
            pass
        return worker.exit_reason()
    finally:
        worker.close()


def test_an_oom_kill_in_the_cgroup_is_reported_as_out_of_memory(tmp_path: Path, monkeypatch) -> None:
    reason = _dying_worker(tmp_path, monkeypatch, "SIGKILL@load", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert reason.startswith("out of memory: the kernel killed the worker at its cgroup's memory.max (1.00 GiB")


def test_a_worker_that_died_otherwise_is_not_called_out_of_memory(tmp_path: Path, monkeypatch) -> None:
    """Even killed by SIGKILL (what the OOM killer sends): without an oom_kill in memory.events it was not OOM."""
    for fault in ("SIGKILL@load", "SIGSEGV@load"):
        reason = _dying_worker(tmp_path / fault, monkeypatch, fault, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
        assert not reason.startswith("out of memory") and fault.split("@")[0] in reason
        assert "OOM killer" not in reason or "not by the OOM killer" in reason


def test_worker_runs_no_hook_unless_named(monkeypatch) -> None:
    """Production workers run without a hook: faults exist only where a test names its module."""
    from bench.execute.worker import HOOK_ENV, _load_hook

    monkeypatch.setenv("BENCH_FAULT", "SIGKILL@threads=1")
    monkeypatch.delenv(HOOK_ENV, raising=False)
    _load_hook()("cell", _cell(1))  # were a hook active, this test process would die here


def test_worker_shares_bench_s_session_but_has_its_own_process_group(smollm2_path: Path, monkeypatch) -> None:
    """Same session = same scheduling autogroup as bench (and as llama-bench started from the same shell): a
    session of its own made a busy machine cost bench 50-150x where llama-bench lost 2.5x (issue 21)."""
    for name, value in environment("hang@load").items():
        monkeypatch.setenv(name, value)
    job = MeasureJob(backend="llamacpp", model_path=str(smollm2_path), cells=[_cell(1).fields()])
    worker = WorkerProcess(job)
    try:
        pid = worker.process.pid
        assert os.getsid(pid) == os.getsid(0)
        assert os.getpgid(pid) == pid != os.getpgid(0)  # killed as a group, and no terminal Ctrl-C reaches it
    finally:
        worker.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

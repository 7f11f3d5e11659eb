"""Fleet runs through a real `dask scheduler` and two real `bench fleet worker` processes on loopback.

The two workers run on this machine under different host identities (--name host-a / host-b), so they are two
hosts to the coordinator: two fingerprints, two sets of rows. Faults come from the test suite's worker hook
(tests.faults.inject): a host whose measuring process hangs at a chosen cell is still busy when the test
kills it or presses Ctrl-C. Every wait is bounded and every process started here is killed at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

pytest.importorskip("distributed")

from bench.execute.process import WorkerProcess, kill_workers  # noqa: E402
from bench.execute.protocol import MeasureJob  # noqa: E402
from bench.results import read_results  # noqa: E402
from bench.run.fleet import resumed_cells  # noqa: E402
from bench.run.fleet_host import decode_message, encode_message, lost_reason  # noqa: E402
from tests.conftest import bench_cmd, quick_suite_yaml  # noqa: E402
from tests.faults.inject import environment  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 400.0
MEASURING = "bench.execute.worker"
PROMPTS = (32, 48, 64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def kill_tree(process: subprocess.Popen[bytes] | psutil.Process) -> None:
    """SIGKILL a process and everything under it (measuring workers run in sessions of their own)."""
    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for member in tree:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(tree, timeout=30)
    if isinstance(process, subprocess.Popen):
        process.wait(timeout=30)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def measuring_processes(tag: str) -> list[psutil.Process]:
    """Live `python -m bench.execute.worker` processes started by this test's hosts (found by their
    environment, so other bench runs on the machine do not count, and neither would an orphan)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if (
                MEASURING in " ".join(process.info["cmdline"] or [])
                and process.status() != psutil.STATUS_ZOMBIE
                and process.environ().get("BENCH_FLEET_TEST_TAG", "").startswith(tag)
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


class Fleet:
    """A scheduler and its workers, all on loopback; `close` kills them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tag = uuid.uuid4().hex
        port = free_port()
        self.address = f"tcp://{LOOPBACK}:{port}"
        dask = shutil.which("dask", path=str(Path(sys.executable).parent))
        command = [dask, "scheduler"] if dask else [sys.executable, "-m", "distributed.cli.dask_scheduler"]
        self.log = (tmp_path / "scheduler.log").open("wb")
        self.scheduler = subprocess.Popen(
            [*command, "--host", LOOPBACK, "--port", str(port), "--dashboard-address", f"{LOOPBACK}:0"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=child_env(),
        )
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        wait_until(lambda: self._listening(port), f"the scheduler on port {port}")

    def _listening(self, port: int) -> bool:
        assert self.scheduler.poll() is None, (self.tmp_path / "scheduler.log").read_text()
        with socket.socket() as sock:
            return sock.connect_ex((LOOPBACK, port)) == 0

    def start_worker(self, name: str, fault: str = "") -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{name}-{len(self.workers)}.log"
        extra = {**(environment(fault) if fault else {}), "BENCH_FLEET_TEST_TAG": f"{self.tag}-{name}"}
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                bench_cmd("fleet", "worker", "--scheduler", self.address, "--name", name),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(**extra),
            )
        self.workers[f"{name}-{len(self.workers)}"] = worker

        def ready() -> bool:
            assert worker.poll() is None, log_path.read_text()
            return f"bench fleet worker {name} at" in log_path.read_text()

        wait_until(ready, f"worker {name}")
        return worker

    def measuring(self, host: str = "") -> list[psutil.Process]:
        """Measuring processes of every host of this fleet, or of one."""
        return measuring_processes(f"{self.tag}-{host}" if host else self.tag)

    def close(self) -> None:
        for worker in self.workers.values():
            kill_tree(worker)
        self.scheduler.terminate()
        try:
            self.scheduler.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_tree(self.scheduler)
        self.log.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    running = Fleet(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def fleet_suite(write_suite) -> Path:
    prompts = ", ".join(map(str, PROMPTS))
    return write_suite(
        quick_suite_yaml(
            "fleet",
            workload=f"workload: {{prompt_tokens: [{prompts}], gen_tokens: 4, depths: [0], repetitions: 1, warmup: 0}}",
        )
    )


def run_coordinator(suite: Path, fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        bench_cmd("run", str(suite), "--fleet", fleet.address, "--quiet", *args),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=child_env(),
    )


def start_coordinator(suite: Path, fleet: Fleet, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        bench_cmd("run", str(suite), "--fleet", fleet.address, "-o", str(out), "--quiet"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def host_rows(out: Path, host: str) -> dict[int, list[str]]:
    """prompt tokens -> the statuses of that cell's rows on `host`, in file order."""
    if not out.exists() or out.stat().st_size == 0:
        return {}
    frame = read_results([out])
    frame = frame[frame["host"] == host]
    return {int(p): list(frame[frame["prompt_tokens"] == p]["status"]) for p in sorted(set(frame["prompt_tokens"]))}


# ----------------------------------------------------------------------------------- without a fleet


def test_messages_carry_numpy_values_as_plain_json() -> None:
    np = pytest.importorskip("numpy")
    text = encode_message(
        "row",
        "host-a",
        cell_id="c1",
        fields={"decode_tok_s_mean": np.float64(1.5), "n_params": np.int64(7), "path": Path("/m")},
    )
    assert decode_message(text) == {
        "kind": "row",
        "host": "host-a",
        "cell_id": "c1",
        "fields": {"decode_tok_s_mean": 1.5, "n_params": 7, "path": "/m"},
    }


def test_resume_redoes_only_cells_whose_host_was_lost(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    out.write_text(
        "cell_id,host,status,reason,suite,model_id\n"
        "c1,host-a,ok,,s,m\nc1,host-b,failed,worker died by SIGSEGV,s,m\n"
        f"c2,host-b,failed,{lost_reason('host-b')},s,m\nc2,host-a,failed,{lost_reason('host-b')},s,m\n",
        encoding="utf-8",
    )
    # host-b's lost cell is measured again; a lost reason naming another host is a real failure of host-a's
    assert resumed_cells(out) == {("host-a", "c1"), ("host-b", "c1"), ("host-a", "c2")}


def test_kill_workers_kills_only_the_calling_threads_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment("hang@load").items():
        monkeypatch.setenv(name, value)
    job = MeasureJob(backend="llamacpp", model_path="/nonexistent.gguf", cells=[])
    worker = WorkerProcess(job)
    try:
        assert kill_workers(owner_thread=-1) == 0 and worker.process.poll() is None  # another thread's: untouched
        assert kill_workers(owner_thread=worker.owner_thread) == 1
        assert worker.process.wait(timeout=30) == -signal.SIGKILL
    finally:
        worker.close()
    assert kill_workers() == 0  # closed workers leave the registry


def test_unreachable_scheduler_is_exit_2_with_a_clear_message(fleet_suite: Path, tmp_path: Path) -> None:
    address = f"tcp://{LOOPBACK}:{free_port()}"  # nothing listens there
    result = subprocess.run(
        bench_cmd("run", str(fleet_suite), "--fleet", address, "-o", str(tmp_path / "r.csv")),
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    assert result.returncode == 2, result.stderr
    assert f"cannot reach the scheduler at {address}" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r.csv").exists()
    worker = subprocess.run(
        bench_cmd("fleet", "worker", "--scheduler", address, "--connect-timeout", "2"),
        capture_output=True,
        text=True,
        timeout=120,
        env=child_env(),
    )
    assert worker.returncode == 2 and f"cannot reach the scheduler at {address}" in worker.stderr, worker.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "SUITE", "--hosts", "host-a"], "--hosts names machines of a fleet run: add --fleet"),
        (["run", "SUITE", "--fleet", "tls://127.0.0.1:9"], "Dask's configuration has no TLS client certificate"),
        (
            ["fleet", "worker", "--tls-cert", "cert.pem"],
            "TLS needs all three of --tls-ca-file, --tls-cert and --tls-key",
        ),
        (
            ["fleet", "worker", "--scheduler", "tls://127.0.0.1:9"],
            "a tls:// scheduler needs this worker's certificates",
        ),
    ],
)
def test_fleet_usage_mistakes_are_exit_2(
    argv: list[str], message: str, fleet_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cli import main

    assert main([str(fleet_suite) if a == "SUITE" else a for a in argv]) == 2
    assert message in capsys.readouterr().err


# ----------------------------------------------------------------------------------- a real fleet


def test_suite_spreads_over_both_hosts_into_one_csv_and_one_report(
    fleet: Fleet, fleet_suite: Path, tmp_path: Path
) -> None:
    fleet.start_worker("host-a")
    fleet.start_worker("host-b")
    out = tmp_path / "fleet.csv"
    result = run_coordinator(fleet_suite, fleet, "-o", str(out))
    assert result.returncode == 0, result.stderr
    frame = read_results([out])
    assert set(frame["status"]) == {"ok"}
    assert sorted(frame["host"].unique()) == ["host-a", "host-b"]
    per_host = frame.groupby("host")
    assert per_host["cell_id"].apply(sorted).map(tuple).nunique() == 1  # both hosts measured the same cells
    assert (per_host["cell_id"].nunique() == len(PROMPTS)).all() and len(frame) == 2 * len(PROMPTS)  # once each
    assert (per_host["fingerprint"].nunique() == 1).all() and frame["fingerprint"].nunique() == 2
    assert frame["run_id"].nunique() == 1

    report = tmp_path / "report.md"
    shown = subprocess.run(
        bench_cmd("report", str(out), "-o", str(report)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=child_env(),
    )
    assert shown.returncode == 0, shown.stderr
    text = report.read_text(encoding="utf-8")
    assert "2 machines (host-a, host-b)" in text
    assert "### host-a / cpu" in text and "### host-b / cpu" in text

    missing = run_coordinator(fleet_suite, fleet, "-o", str(tmp_path / "other.csv"), "--hosts", "host-a,host-z")
    assert missing.returncode == 2 and "--hosts: host-z not connected" in missing.stderr, missing.stderr


def test_lost_host_fails_its_unfinished_cells_and_resume_finishes_them(
    fleet: Fleet, fleet_suite: Path, tmp_path: Path
) -> None:
    fleet.start_worker("host-a")
    doomed = fleet.start_worker("host-b", fault=f"hang@prompt_tokens={PROMPTS[1]}")
    out = tmp_path / "fleet.csv"
    coordinator = start_coordinator(fleet_suite, fleet, out)
    try:
        # The first cell's row is in the file while host-b's group still runs: rows stream as cells end.
        wait_until(
            lambda: host_rows(out, "host-b").get(PROMPTS[0]) == ["ok"] and bool(fleet.measuring()),
            "host-b's first row",
            RUN_TIMEOUT_S,
        )
        kill_tree(doomed)
        _, stderr = coordinator.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        kill_tree(coordinator)
    assert coordinator.returncode == 3, stderr  # failed cells
    frame = read_results([out])
    lost = frame[(frame["host"] == "host-b") & (frame["status"] == "failed")]
    assert sorted(lost["prompt_tokens"]) == list(PROMPTS[1:])
    assert all(reason.startswith("host host-b lost") for reason in lost["reason"])
    assert host_rows(out, "host-b") == {PROMPTS[0]: ["ok"], PROMPTS[1]: ["failed"], PROMPTS[2]: ["failed"]}
    assert host_rows(out, "host-a") == {p: ["ok"] for p in PROMPTS}  # the rest of the fleet went on

    fleet.start_worker("host-b")  # the machine is back, without the fault
    resumed = run_coordinator(fleet_suite, fleet, "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert host_rows(out, "host-a") == {p: ["ok"] for p in PROMPTS}  # nothing measured twice
    assert host_rows(out, "host-b") == {PROMPTS[0]: ["ok"], PROMPTS[1]: ["failed", "ok"], PROMPTS[2]: ["failed", "ok"]}


def test_a_stopped_worker_leaves_no_measuring_process_and_its_host_is_lost(
    fleet: Fleet, fleet_suite: Path, tmp_path: Path
) -> None:
    fleet.start_worker("host-a")
    leaving = fleet.start_worker("host-b", fault=f"hang@prompt_tokens={PROMPTS[1]}")
    out = tmp_path / "fleet.csv"
    coordinator = start_coordinator(fleet_suite, fleet, out)
    try:
        wait_until(lambda: host_rows(out, "host-b").get(PROMPTS[0]) == ["ok"], "host-b's first row", RUN_TIMEOUT_S)
        time.sleep(1.0)  # host-b is inside its second cell, hanging
        assert fleet.measuring("host-b")
        leaving.send_signal(signal.SIGTERM)  # the machine's owner stops the worker (or systemd does)
        assert leaving.wait(timeout=60) == 0
        wait_until(lambda: not fleet.measuring("host-b"), "host-b's measuring process to end", 30)
        _, stderr = coordinator.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        kill_tree(coordinator)
    assert coordinator.returncode == 3, stderr
    assert host_rows(out, "host-a") == {p: ["ok"] for p in PROMPTS}
    assert host_rows(out, "host-b") == {PROMPTS[0]: ["ok"], PROMPTS[1]: ["failed"], PROMPTS[2]: ["failed"]}
    frame = read_results([out])
    assert all(r.startswith("host host-b lost") for r in frame[frame["status"] == "failed"]["reason"])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "coordinator-killed"])
def test_stopping_the_coordinator_leaves_no_measuring_process_on_any_host(
    fleet: Fleet, fleet_suite: Path, tmp_path: Path, signum: int
) -> None:
    hang = f"hang@prompt_tokens={PROMPTS[1]}"
    workers = [fleet.start_worker(name, fault=hang) for name in ("host-a", "host-b")]
    out = tmp_path / "fleet.csv"
    coordinator = start_coordinator(fleet_suite, fleet, out)
    try:
        wait_until(
            lambda: all(host_rows(out, h).get(PROMPTS[0]) == ["ok"] for h in ("host-a", "host-b")),
            "each host's first row",
            RUN_TIMEOUT_S,
        )
        time.sleep(1.0)  # each host is now inside its second cell, hanging: only a kill ends it
        assert len(fleet.measuring()) == 2
        coordinator.send_signal(signum)
        _, stderr = coordinator.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        kill_tree(coordinator)
    if signum == signal.SIGINT:  # Ctrl-C: the hosts are told to stop; a killed coordinator's tasks are cancelled
        assert coordinator.returncode == 130, stderr
        assert f"--fleet {fleet.address} --resume {out}" in stderr and "Traceback" not in stderr
    wait_until(lambda: not fleet.measuring(), "no measuring process on any host", 60)
    assert all(worker.poll() is None for worker in workers)  # the hosts stay up for the next run
    for host in ("host-a", "host-b"):  # what was measured is kept; a killed cell is no row
        assert host_rows(out, host) == {PROMPTS[0]: ["ok"]}

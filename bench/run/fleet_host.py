"""A fleet host: the Dask worker `bench fleet worker` starts, and the tasks a coordinator (bench.run.fleet)
pins to it.

Only data arrives: the suite's YAML text, parsed here with the same safe loader as a local run, and cell
ids. Dask names the two task functions below by module and name, so what runs is this host's own installed
bench; nothing in a suite is code. The host plans the suite against its own hardware and backends
(bench.run.select), resolves models from its own files, packages and caches (HostRunner), measures in the
same isolated worker processes as a local run, and streams each cell's row to the coordinator as it ends
through a distributed Queue named after the run.

A host identity is its Dask worker name: the machine's host name, or `--name`; it is the `host` of its rows.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distributed import Event, Queue, Worker, get_client, get_worker

from bench.errors import BenchError, first_line
from bench.execute.fleet_config import RESOURCE
from bench.execute.process import Interrupted, kill_workers
from bench.hardware import Fingerprint, SystemWarning, detect
from bench.plan import PlannedCell
from bench.run.host import HostRunner
from bench.run.local import RunOptions, select
from bench.runners.registry import detect_machine, quantization_catalog
from bench.suite.load import parse_suite

WORKER_THREADS = 2  # one measuring group (the resource allows one) and one plan of another run
STOP_POLL_S = 0.5
KILL_POLL_S = 0.05
CACHED_RUNS = 4

_CLOSING = threading.Event()  # this worker is shutting down: every running group stops


@dataclass(frozen=True)
class RunRequest:
    """What a coordinator sends for one run: plain data."""

    run_id: str
    suite_text: str
    suite_path: str  # for messages (and paths in the suite resolve from the worker's directory)
    shard: tuple[int, int] | None = None
    filters: list[str] = field(default_factory=list)
    force: bool = False


@dataclass
class HostPlan:
    """A host's answer: who it is and what it would do with the suite."""

    fingerprint: Fingerprint
    planned: list[PlannedCell]
    warnings: list[SystemWarning]


def rows_queue_name(run_id: str) -> str:
    return f"bench-rows-{run_id}"


def stop_event_name(run_id: str) -> str:
    return f"bench-stop-{run_id}"


def lost_reason(host: str) -> str:
    """The reason of a cell whose host left mid-run; `bench run --resume` measures such cells again."""
    return f"host {host} lost: its worker left the scheduler before the cell ended"


def is_lost_reason(reason: str, host: str) -> bool:
    return reason.startswith(f"host {host} lost")


def _plain(value: Any) -> Any:
    """JSON for what a row may hold besides plain numbers and text (numpy scalars, paths)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def encode_message(kind: str, host: str, **values: Any) -> str:
    # Text through the queue: the scheduler relays msgpack-able data only, and rows hold numpy scalars.
    return json.dumps({"kind": kind, "host": host, **values}, default=_plain)


def decode_message(text: str) -> dict[str, Any]:
    return dict(json.loads(text))


# ----------------------------------------------------------------------------------- host state


@dataclass
class HostRun:
    """One run on this host: this host's fingerprint, the runner with its model caches, and its plan."""

    fingerprint: Fingerprint
    runner: HostRunner
    queue: Any  # distributed.Queue
    host: str
    planned: dict[str, PlannedCell] | None = None  # by cell id, made once (the first task that needs it)
    plan_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, kind: str, **values: Any) -> None:
        self.queue.put(encode_message(kind, self.host, **values))

    def plan(self, request: RunRequest) -> dict[str, PlannedCell]:
        """This host's plan of the run (same planner and rules as a local run); its groups carry it out."""
        with self.plan_lock:
            if self.planned is None:
                options = RunOptions(shard=request.shard, filters=list(request.filters), force=request.force)
                planned = select(self.runner.suite, self.fingerprint, options)
                self.runner.adopt_plan(planned)
                self.planned = {item.cell_id: item for item in planned}
            return self.planned


_RUNS: OrderedDict[str, HostRun] = OrderedDict()
_RUNS_LOCK = threading.Lock()


def _host_run(request: RunRequest) -> HostRun:
    """The run's state, made by its first task on this host (the plan) and kept for its groups."""
    with _RUNS_LOCK:
        if request.run_id in _RUNS:
            return _RUNS[request.run_id]
        host = str(get_worker().name)
        suite = parse_suite(request.suite_text, Path(request.suite_path), quantization_catalog())
        fingerprint = replace(detect_machine(), host=host)
        queue = Queue(rows_queue_name(request.run_id), client=get_client())
        runner = HostRunner(
            suite,
            fingerprint,
            force=request.force,  # what quality reports goes to the coordinator
            say=lambda text: queue.put(encode_message("say", host, text=text)),
        )
        run = HostRun(fingerprint, runner, queue, host)
        _RUNS[request.run_id] = run
        while len(_RUNS) > CACHED_RUNS:
            _RUNS.popitem(last=False)[1].queue.close()
        return run


# ----------------------------------------------------------------------------------- tasks


def plan_on_host(request: RunRequest) -> HostPlan:
    """Task: this host's fingerprint and its plan of the suite (same planner and rules as a local run)."""
    run = _host_run(request)
    planned = list(run.plan(request).values())
    return HostPlan(run.fingerprint, planned, list(run.runner.system_warnings))


def run_group_on_host(request: RunRequest, cell_ids: list[str]) -> str:
    """Task: measure one load group here, sending each cell's row as it ends. Returns "done" or "stopped"."""
    run = _host_run(request)
    stop = Event(stop_event_name(request.run_id), client=get_client())
    if stop.is_set() or _CLOSING.is_set():
        return "stopped"
    planned = run.plan(request)
    group = [planned[cell_id] for cell_id in cell_ids]
    stopped, finished = threading.Event(), threading.Event()
    owner = threading.get_ident()
    worker = get_worker()
    key = worker.get_current_task()
    threading.Thread(
        target=_watch_stop, args=(stop, lambda: _cancelled(worker, key), stopped, finished, owner), daemon=True
    ).start()

    def checked(send: Callable[[Any], None]) -> Callable[[Any], None]:
        def call(item: Any) -> None:
            if stopped.is_set() or _CLOSING.is_set():  # what a killed worker reports is not a measurement
                raise Interrupted
            send(item)

        return call

    emit = checked(
        lambda row: run.send(
            "row",
            cell_id=row.cell.cell_id,
            status=row.status,
            reason=row.reason,
            fields=row.fields,
            model_source=row.model_source,
        )
    )
    started = checked(lambda cell: run.send("start", cell_id=cell.cell_id))
    try:
        run.runner.probe_bandwidth([group])  # before the worker starts: a probe would disturb it
        run.runner.run_group(group, emit, started)
    except Interrupted:
        return "stopped"
    finally:
        finished.set()
        kill_workers(owner)
    return "done"


def _cancelled(worker: Any, key: Any) -> bool:
    """Whether Dask no longer wants this task: the coordinator cancelled it, or left without a word (the
    scheduler releases a departed client's tasks)."""
    task = worker.state.tasks.get(key)
    return task is None or task.state in ("cancelled", "released", "forgotten")


def _watch_stop(
    stop: Any, cancelled: Callable[[], bool], stopped: threading.Event, finished: threading.Event, owner: int
) -> None:
    """Dask cannot interrupt a running task: on the run's stop event, the task's cancellation or this
    worker closing, kill the task's worker processes, again and again until the task has unwound."""
    while not finished.is_set():
        try:
            if stop.wait(timeout=STOP_POLL_S) or cancelled() or _CLOSING.is_set():
                break
        except Exception:  # noqa: BLE001 - the scheduler is gone: nobody is left to take the rows
            break
    else:
        return
    stopped.set()
    while not finished.wait(KILL_POLL_S):
        kill_workers(owner)


# ----------------------------------------------------------------------------------- the worker


def security_for(scheduler: str, ca_file: str | None, cert: str | None, key: str | None) -> Any:
    """Dask's TLS settings for a worker: the given files, or what Dask's configuration says (distributed.comm.tls)."""
    from distributed.security import Security

    if ca_file or cert or key:
        if not (ca_file and cert and key):
            raise BenchError("TLS needs all three of --tls-ca-file, --tls-cert and --tls-key")
        return Security(tls_ca_file=ca_file, tls_worker_cert=cert, tls_worker_key=key, require_encryption=True)
    security = Security()
    if scheduler.startswith("tls://") and not (security.tls_ca_file and security.tls_worker_cert):
        raise BenchError(
            f"--scheduler {scheduler}: a tls:// scheduler needs this worker's certificates",
            hint="give --tls-ca-file, --tls-cert and --tls-key (README, Many machines)",
        )
    return security


def serve_worker(
    scheduler: str, name: str | None, security: Any, connect_timeout_s: float, on_ready: Callable[[str, str], None]
) -> bool:
    """Run a bench host's Dask worker until Ctrl-C/SIGTERM (True) or until the scheduler goes away (False);
    on the way out, no measuring process is left behind."""
    host = name or detect().host
    try:
        return asyncio.run(_serve(scheduler, host, security, connect_timeout_s, on_ready))
    except (OSError, TimeoutError) as exc:
        raise BenchError(
            f"cannot reach the scheduler at {scheduler}: {first_line(exc)}",
            hint="start it with `dask scheduler` (see README, Many machines)",
        ) from None
    except ValueError as exc:  # e.g. "name taken": another worker already uses this host identity
        raise BenchError(f"the scheduler at {scheduler} refused worker {host!r}: {first_line(exc)}") from None
    finally:
        _CLOSING.set()
        kill_workers()


async def _serve(
    scheduler: str, host: str, security: Any, connect_timeout_s: float, on_ready: Callable[[str, str], None]
) -> bool:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C arrives as KeyboardInterrupt
            pass
    worker = await Worker(
        scheduler,
        name=host,
        nthreads=WORKER_THREADS,
        resources={RESOURCE: 1},
        memory_limit=0,
        security=security,
        death_timeout=connect_timeout_s,
    )
    on_ready(host, str(worker.address))
    finished = asyncio.ensure_future(worker.finished())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([finished, stopping], return_when=asyncio.FIRST_COMPLETED)
        return stop.is_set()
    finally:
        _CLOSING.set()  # running groups stop, and their measuring processes are killed, before Dask closes
        kill_workers()
        stopping.cancel()
        await worker.close(executor_wait=False, reason="bench fleet worker stopped")

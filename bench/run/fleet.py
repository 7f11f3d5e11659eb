"""A fleet run: one suite over many machines through a Dask scheduler, every row in one CSV.

The coordinator (this module, inside `bench run SUITE --fleet ADDRESS`) asks each host (a `bench fleet
worker`, bench.run.fleet_host) for its fingerprint and its plan of the suite, writes the cells a host cannot
run as `skipped` with that host's reason, and submits one task per (host, load group) pinned to that host
and holding its one `bench-host` resource. Rows come back through a distributed Queue as each cell ends and
are appended crash-safely (RowSink) with the measuring host's own fingerprint; `bench report` of the file
then compares the machines. A host that leaves mid-run has its unfinished cells written as failed
("host <name> lost") and the others go on; `--resume` measures those again, keyed by cell id and host.
Nothing here prints: the caller hears RunEvents.
"""

from __future__ import annotations

import inspect
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed import Client, Event, Future, Queue

from bench.errors import BenchError, first_line
from bench.execute.fleet_config import CONNECT_TIMEOUT_S, DEFAULT_SCHEDULER, RESOURCE
from bench.hardware import Fingerprint, SystemWarning
from bench.results import read_results
from bench.run.fleet_host import (
    HostPlan,
    RunRequest,
    decode_message,
    is_lost_reason,
    lost_reason,
    plan_on_host,
    rows_queue_name,
    run_group_on_host,
    stop_event_name,
)
from bench.run.host import load_groups
from bench.run.local import RunEvents, RunOptions, RunSummary, load_run_suite
from bench.run.paths import output_path
from bench.run.rows import RowOut, RowSink, skipped_row
from bench.suite import Cell

POLL_S = 0.5  # how often the coordinator looks for lost hosts while it waits for rows
PLAN_TIMEOUT_S = 300.0  # a host's first plan imports its backends and probes its hardware
STOP_GRACE_S = 30.0
SAME_INSTALL = (
    "install the same bench, Dask and Python on this machine, on every host and where `dask scheduler` "
    "runs (Dask unpickles the tasks there too)"
)  # after Ctrl-C: how long hosts get to kill their measuring processes and confirm


@dataclass
class FleetOptions:
    scheduler: str = DEFAULT_SCHEDULER
    hosts: list[str] = field(default_factory=list)  # empty: every bench worker connected now
    connect_timeout_s: float = CONNECT_TIMEOUT_S


@dataclass
class GroupTask:
    host: str
    future: Future
    cell_ids: list[str]
    ended: bool = False


def connect(options: FleetOptions) -> Client:
    if options.scheduler.startswith("tls://"):
        check_client_tls(options.scheduler)
    try:
        return Client(options.scheduler, timeout=options.connect_timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BenchError(
            f"cannot reach the scheduler at {options.scheduler}: {first_line(exc)}",
            hint="start it with `dask scheduler --host 127.0.0.1` (README, Many machines), "
            "and a `bench fleet worker` on each machine",
        ) from None
    except ValueError as exc:
        raise BenchError(
            f"--fleet {options.scheduler!r}: not a scheduler address ({first_line(exc)}); "
            f"expected e.g. {DEFAULT_SCHEDULER}"
        ) from None


def check_client_tls(address: str) -> None:
    """A tls:// scheduler needs this side's certificates in Dask's configuration (Dask fails obscurely without)."""
    from distributed.security import Security

    security = Security()  # what distributed.comm.tls.* in Dask's configuration (files, DASK_* variables) says
    if not (security.tls_ca_file and security.tls_client_cert):
        raise BenchError(
            f"--fleet {address}: Dask's configuration has no TLS client certificate",
            hint="set distributed.comm.tls.ca-file, distributed.comm.tls.client.cert and "
            "distributed.comm.tls.client.key (README, Many machines)",
        )


def bench_workers(client: Client) -> dict[str, str]:
    """Host name -> worker address, for the workers `bench fleet worker` started (they hold the resource)."""
    # Recent Dask lists only a few workers unless asked for all; older Dask lists all and lacks the argument.
    every = {"n_workers": -1} if "n_workers" in inspect.signature(client.scheduler_info).parameters else {}
    workers = client.scheduler_info(**every)["workers"]
    return {
        str(info.get("name")): address for address, info in workers.items() if RESOURCE in (info.get("resources") or {})
    }


def find_hosts(client: Client, options: FleetOptions) -> dict[str, str]:
    """The hosts of this run: those named by --hosts (waiting up to the connect timeout for them to join),
    or every bench worker connected now."""
    deadline = time.monotonic() + options.connect_timeout_s
    while True:
        connected = bench_workers(client)
        missing = [h for h in options.hosts if h not in connected]
        if (connected and not missing) or time.monotonic() > deadline:
            break
        time.sleep(POLL_S)
    known = ", ".join(sorted(connected)) or "none"
    if missing:
        raise BenchError(
            f"--hosts: {', '.join(missing)} not connected to {options.scheduler} (connected bench workers: {known})"
        )
    if not connected:
        raise BenchError(
            f"no bench fleet worker is connected to {options.scheduler}",
            hint=f"start one on each machine: bench fleet worker --scheduler {options.scheduler}",
        )
    return {h: connected[h] for h in options.hosts} if options.hosts else dict(sorted(connected.items()))


def wait_done(futures: list[Future], timeout_s: float) -> None:
    """Until every future is done or the time is up (distributed.wait needs a default client)."""
    deadline = time.monotonic() + timeout_s
    while not all(f.done() for f in futures) and time.monotonic() < deadline:
        time.sleep(0.05)


def resumed_cells(path: Path | None) -> set[tuple[str, str]]:
    """(host, cell_id) already in the file; a cell whose host was lost counts as not measured."""
    if path is None or path.stat().st_size == 0:
        return set()
    frame = read_results([path])[["host", "cell_id", "status", "reason"]].fillna("")
    return {
        (host, cell_id)
        for host, cell_id, status, reason in frame.itertuples(index=False)
        if cell_id and not (status == "failed" and is_lost_reason(reason, host))
    }


class FleetRun:
    """One fleet run through a connected client."""

    def __init__(self, client: Client, request: RunRequest, events: RunEvents) -> None:
        self.client = client
        self.request = request
        self.events = events
        self.queue = Queue(rows_queue_name(request.run_id), client=client)
        self.addresses: dict[str, str] = {}
        self.fingerprints: dict[str, Fingerprint] = {}
        self.pending: dict[str, dict[str, Cell]] = {}  # host -> cells not yet written
        self.groups: list[GroupTask] = []
        self.lost: set[str] = set()
        self.sink: RowSink | None = None

    # ------------------------------------------------------------------ planning
    def plan(self, hosts: dict[str, str]) -> dict[str, HostPlan]:
        """Each host's fingerprint and plan, asked of all hosts at once; a host that leaves meanwhile is
        left out of the run, a host whose plan fails stops it (a broken install there is the user's to fix)."""
        self.addresses = dict(hosts)
        futures = {
            host: self.client.submit(
                plan_on_host,
                self.request,
                key=f"bench-plan-{host}-{self.request.run_id}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for host, address in hosts.items()
        }
        deadline = time.monotonic() + PLAN_TIMEOUT_S
        waiting = dict(futures)
        while waiting and time.monotonic() < deadline:
            wait_done(list(waiting.values()), POLL_S)
            live = bench_workers(self.client)
            for host in list(waiting):
                if waiting[host].done():
                    del waiting[host]
                elif live.get(host) != self.addresses[host]:
                    self._say(f"host {host} left before planning; it is not part of this run")
                    self.lost.add(host)
                    del waiting[host]
        plans: dict[str, HostPlan] = {}
        for host, future in futures.items():
            if host in self.lost:
                future.cancel()
            elif not future.done():
                future.cancel()
                raise BenchError(f"host {host} did not plan the suite within {PLAN_TIMEOUT_S:.0f} s")
            elif future.status == "error":
                raise BenchError(
                    f"host {host} could not plan the suite: {first_line(future.exception())}", hint=SAME_INSTALL
                )
            else:
                plans[host] = future.result()
        if not plans:
            raise BenchError("every host left before planning")
        return plans

    def start(self, plans: dict[str, HostPlan], path: Path, done: set[tuple[str, str]]) -> None:
        """Write each host's skipped cells and submit its load groups."""
        chosen = {host: [p for p in plan.planned if (host, p.cell.cell_id) not in done] for host, plan in plans.items()}
        self.fingerprints = {host: plan.fingerprint for host, plan in plans.items()}
        self.sink = RowSink(path, self.request.run_id, self.events.row_written)
        warnings = [
            SystemWarning(f"{host}: {w.name}", w.message, w.fix) for host, plan in plans.items() for w in plan.warnings
        ]
        self.events.planned([p for planned in chosen.values() for p in planned], path, warnings)
        self._say("fleet: " + ", ".join(f"{host} ({len(planned)} cells)" for host, planned in chosen.items()))
        for host, planned in chosen.items():
            self.pending[host] = {p.cell.cell_id: p.cell for p in planned if p.runnable}
            skipped, groups = load_groups(planned)
            for item in skipped:
                self._write(host, skipped_row(item))
            for index, group in enumerate(groups):
                ids = [item.cell_id for item in group]
                future = self.client.submit(
                    run_group_on_host,
                    self.request,
                    ids,
                    key=f"bench-group-{host}-{index}-{self.request.run_id}",
                    workers=[self.addresses[host]],
                    allow_other_workers=False,
                    resources={RESOURCE: 1},
                    pure=False,
                    priority=-index,
                )
                self.groups.append(GroupTask(host, future, ids))

    # ------------------------------------------------------------------ collecting
    def collect(self) -> None:
        """Write rows as they arrive until every host's cells are written (or its host is lost)."""
        while any(self.pending.values()):
            try:
                self._take(self.queue.get(timeout=POLL_S))
            except TimeoutError:
                pass
            self._drain()
            self._check_hosts()
            self._check_groups()

    def _drain(self) -> None:
        for message in self.queue.get(batch=True):
            self._take(message)

    def _take(self, text: str) -> None:
        message = decode_message(text)
        host, kind = message["host"], message["kind"]
        if kind == "say":
            self._say(f"{host}: {message['text']}")
            return
        cell = self.pending.get(host, {}).get(message.get("cell_id", ""))
        if cell is None:  # a late row of a lost host, or a stray one: each cell is written once per host
            return
        if kind == "start":
            self.events.cell_started(cell)
        elif kind == "row":
            del self.pending[host][cell.cell_id]
            self._write(
                host, RowOut(cell, message["status"], message["reason"], message["fields"], message["model_source"])
            )

    def _write(self, host: str, row: RowOut) -> None:
        assert self.sink is not None
        self.sink.write(row, self.fingerprints[host])

    def _fail_pending(self, host: str, cell_ids: list[str], reason: str) -> None:
        for cell_id in cell_ids:
            cell = self.pending[host].pop(cell_id, None)
            if cell is not None:
                self._write(host, RowOut(cell, "failed", reason))

    def _check_hosts(self) -> None:
        live = bench_workers(self.client)
        for host, cells in self.pending.items():
            if cells and host not in self.lost and live.get(host) != self.addresses[host]:
                self._drain()  # rows it sent before it went are real measurements
                self.lost.add(host)
                self._say(f"host {host} lost: its unfinished cells are written as failed; the others go on")
                for group in self.groups:
                    if group.host == host:
                        group.future.cancel()
                        group.ended = True
                self._fail_pending(host, list(cells), lost_reason(host))

    def _check_groups(self) -> None:
        for group in self.groups:
            if group.ended or not group.future.done():
                continue
            group.ended = True
            self._drain()  # a task's rows are on the queue before it returns
            if group.future.status == "error":
                reason = f"host {group.host}: {first_line(group.future.exception())}"
            elif (
                group.future.status == "finished" and group.future.result() == "stopped"
            ):  # its worker is shutting down: the host is leaving
                reason = lost_reason(group.host)
            else:
                reason = f"host {group.host} ended the group without a row for this cell"
            self._fail_pending(group.host, group.cell_ids, reason)

    # ------------------------------------------------------------------ stopping
    def stop(self) -> None:
        """Ctrl-C: hosts kill their measuring processes; the coordinator waits (bounded) for their tasks to
        return, keeps the rows that arrived meanwhile, and cancels whatever had not started."""
        Event(stop_event_name(self.request.run_id), client=self.client).set()
        running = [g.future for g in self.groups if not g.ended]
        wait_done(running, STOP_GRACE_S)
        if self.sink is not None:
            self._drain()
        self.client.cancel(running)

    def _say(self, text: str) -> None:
        if self.events.say:
            self.events.say(text)


def run_fleet(
    suite_path: Path, options: RunOptions, fleet: FleetOptions, events: RunEvents | None = None
) -> RunSummary:
    """Measure the suite on every host of the fleet; each row is on disk the moment its cell ends."""
    events = events or RunEvents()
    suite = load_run_suite(suite_path, options)
    request = RunRequest(
        run_id=uuid.uuid4().hex[:12],
        suite_text=suite_path.read_text(encoding="utf-8"),
        suite_path=str(suite_path),
        shard=options.shard,
        filters=list(options.filters),
        force=options.force,
    )
    client = connect(fleet)
    try:
        run = FleetRun(client, request, events)
        plans = run.plan(find_hosts(client, fleet))
        path = output_path(suite, "fleet", options)
        try:
            run.start(plans, path, resumed_cells(options.resume))
            run.collect()
        except KeyboardInterrupt:
            run.stop()
            return _summary(run, path, interrupted=True)
        return _summary(run, path)
    finally:
        client.close()


def _summary(run: FleetRun, path: Path, interrupted: bool = False) -> RunSummary:
    counts: dict[str, Any] = run.sink.counts if run.sink else {}
    return RunSummary(path=path, counts=counts, interrupted=interrupted)

"""The test suite's fault hook for worker processes (BENCH_WORKER_HOOK=tests.faults.inject:at).

BENCH_FAULT holds ';'-separated specs "<action>@load" or "<action>@<axis>=<value>"; actions: a signal name
(SIGSEGV, SIGILL, ...), hang, oom (grows resident memory until the limit stops it), raise.
"""

from __future__ import annotations

import os
import signal
import time

from bench.suite import Cell

FAULT_ENV = "BENCH_FAULT"
HOOK = "tests.faults.inject:at"


def environment(fault: str) -> dict[str, str]:
    """The variables a worker needs to fail as `fault` says (tests/ importable from the repository root)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {FAULT_ENV: fault, "BENCH_WORKER_HOOK": HOOK, "PYTHONPATH": path}


def _action(where: str, cell: Cell | None) -> str | None:
    for spec in filter(None, os.environ.get(FAULT_ENV, "").split(";")):
        action, _, target = spec.partition("@")
        if target == "load":
            if where == "load":
                return action
        elif cell is not None and where == "cell":
            field, _, value = target.partition("=")
            if str(cell.axis_value(field)) == value:
                return action
    return None


def at(where: str, cell: Cell | None) -> None:
    action = _action(where, cell)
    if action is None:
        return
    if action.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, action))
        time.sleep(5)  # a signal that is blocked or handled must not look like success
    elif action == "hang":
        while True:
            time.sleep(1)
    elif action == "oom":
        import numpy as np

        hoard = []
        while True:  # touched pages: resident memory grows until the parent's watchdog stops it
            hoard.append(np.ones(64 * 2**20, dtype=np.uint8))
            time.sleep(0.01)
    elif action == "raise":
        raise RuntimeError("injected failure")

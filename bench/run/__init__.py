"""Run a suite: local.py (this machine), host.py (a host's groups), rows.py (outcome -> CSV row), fleet*.py (Dask)."""

from bench.run.local import RunEvents, RunOptions, RunSummary, load_run_suite, run_suite, select
from bench.run.rows import RowOut, RowSink, build_row

__all__ = [
    "RowOut",
    "RowSink",
    "RunEvents",
    "RunOptions",
    "RunSummary",
    "build_row",
    "load_run_suite",
    "run_suite",
    "select",
]

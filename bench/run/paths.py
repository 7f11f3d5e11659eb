"""Where a run's rows go: --resume's file, --output, DIR/<host>/<UTC time>.csv with --history, or
results/<suite>-<host>-<UTC time>.csv."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import RunOptions
    from bench.suite import Suite


def utc_stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def output_path(suite: Suite, host: str, options: RunOptions, results_dir: Path = Path("results")) -> Path:
    if options.resume:
        return options.resume
    if options.output:
        return options.output
    host = host or socket.gethostname()
    if options.history:
        return options.history / host / f"{utc_stamp()}.csv"
    return results_dir / f"{suite.name}-{host}-{utc_stamp()}.csv"

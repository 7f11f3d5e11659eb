"""`bench fleet worker`: make this machine a host of fleet runs (`bench run SUITE --fleet ADDRESS`)."""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from bench.cli._console import EXIT_OK, console
from bench.errors import BenchError
from bench.execute.fleet_config import CONNECT_TIMEOUT_S, DEFAULT_SCHEDULER

EXIT_SCHEDULER_GONE = 1


def fleet_module(name: str) -> ModuleType:
    """bench.run.<name>, or a clear error when the optional `fleet` extra (Dask) is not installed."""
    try:
        return importlib.import_module(f"bench.run.{name}")
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in ("dask", "distributed"):
            raise
        raise BenchError(
            "fleet runs need Dask, which is not installed here",
            hint="pip install 'bench[fleet]' (or: pip install 'dask[distributed]')",
        ) from None


def cmd_fleet_worker(args: argparse.Namespace) -> int:
    host_side = fleet_module("fleet_host")
    security = host_side.security_for(args.scheduler, args.tls_ca_file, args.tls_cert, args.tls_key)

    def ready(host: str, address: str) -> None:
        console.print(
            f"bench fleet worker [bold]{host}[/] at {address}, connected to {args.scheduler}; Ctrl-C to stop",
            soft_wrap=True,
            highlight=False,
        )

    if host_side.serve_worker(args.scheduler, args.name, security, args.connect_timeout, ready):
        console.print("worker stopped")
        return EXIT_OK
    console.print(f"[red]the scheduler at {args.scheduler} went away[/]: worker stopped", soft_wrap=True)
    return EXIT_SCHEDULER_GONE


def register(sub: argparse._SubParsersAction) -> None:
    fleet = sub.add_parser("fleet", help="serve this machine to fleet runs (bench run SUITE --fleet ADDRESS)")
    verbs = fleet.add_subparsers(dest="fleet_command", required=True, metavar="FLEET_COMMAND")
    worker = verbs.add_parser("worker", help="start a Dask worker that measures for fleet runs on this machine")
    worker.add_argument(
        "--scheduler",
        default=DEFAULT_SCHEDULER,
        help=f"the Dask scheduler's address (default {DEFAULT_SCHEDULER}: this machine only)",
    )
    worker.add_argument("--name", help="host identity in the rows (default: this machine's host name)")
    worker.add_argument("--tls-ca-file", help="TLS: the certificate authority that signs every certificate")
    worker.add_argument("--tls-cert", help="TLS: this worker's certificate")
    worker.add_argument("--tls-key", help="TLS: this worker's private key")
    worker.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT_S,
        metavar="S",
        help=f"give up when the scheduler does not answer in S seconds (default {CONNECT_TIMEOUT_S:g})",
    )
    worker.set_defaults(func=cmd_fleet_worker)

"""Command line: one module per verb (bench/cli/<verb>.py), each with `register`. User mistakes print one clear line, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from rich.markup import escape

from bench import __version__
from bench.cli._console import EXIT_INTERRUPTED, EXIT_USAGE, console
from bench.errors import BenchError

VERBS = ("hw", "plan", "run", "report", "quantize", "compare", "trend", "export", "fleet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark local LLM inference on this hardware.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for verb in VERBS:
        importlib.import_module(f"bench.cli.{verb}").register(sub)
    return parser


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # CI cancelling a job sends SIGTERM: stop like Ctrl-C, so workers are killed and rows kept.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except BenchError as exc:
        console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

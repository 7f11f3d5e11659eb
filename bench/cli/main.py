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


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the command line, only the verb it names is set up, so `bench plan` does not import
    what `bench compare` needs (pandas, matplotlib take a second to import)."""
    parser = argparse.ArgumentParser(prog="bench", description="Benchmark local LLM inference on this hardware.")
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = next((a for a in (argv or []) if not a.startswith("-")), None)
    for verb in (named,) if named in VERBS else VERBS:
        importlib.import_module(f"bench.cli.{verb}").register(sub)
    return parser


def _terminate_as_interrupt(signum: int, frame: object) -> None:
    # CI cancelling a job sends SIGTERM: stop like Ctrl-C, so workers are killed and rows kept.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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

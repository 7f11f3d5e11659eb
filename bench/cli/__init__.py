"""Command line: one module per verb (bench/cli/<verb>.py); main.py parses and dispatches."""

from bench.cli.main import VERBS, build_parser, main

__all__ = ["VERBS", "build_parser", "main"]

"""`bench hw`: this machine's fingerprint and the system warnings that would disturb a measurement."""

from __future__ import annotations

import argparse

from bench.cli._console import EXIT_OK, out


def cmd_hw(args: argparse.Namespace) -> int:
    from bench.hardware import format_fingerprint, system_warnings
    from bench.runners.registry import detect_machine

    fingerprint = detect_machine()
    out.print(format_fingerprint(fingerprint, system_warnings(fingerprint)))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hw", help="show this machine's hardware fingerprint and system warnings")
    hw.set_defaults(func=cmd_hw)

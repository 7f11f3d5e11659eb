"""`bench hw`: this machine's fingerprint, the system warnings that would disturb a measurement, and its sensors."""

from __future__ import annotations

import argparse

from bench.cli._console import EXIT_OK, out


def cmd_hw(args: argparse.Namespace) -> int:
    from bench.hardware import format_fingerprint, format_sensors, system_warnings
    from bench.runners.registry import detect_machine

    fingerprint = detect_machine()
    out.print(format_fingerprint(fingerprint, system_warnings(fingerprint)))
    out.print(format_sensors())
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    hw = sub.add_parser("hw", help="show this machine's hardware fingerprint and system warnings")
    hw.set_defaults(func=cmd_hw)

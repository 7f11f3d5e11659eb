"""`bench plan`: a suite's cells on this machine, without running them."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import out


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.planview import print_plan

    return print_plan(Path(args.suite), out, force=args.force)


def register(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser("plan", help="show a suite's cells (and why any are skipped) without running them")
    plan.add_argument("suite")
    plan.add_argument("--force", action="store_true", help="do not skip cells the memory planner says will not fit")
    plan.set_defaults(func=cmd_plan)

"""`bench plan`: a suite's cells on this machine, without running them: a summary per model × quantization ×
device by default, every cell with --cells, JSON or CSV for scripts with --format."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli._console import out


def cmd_plan(args: argparse.Namespace) -> int:
    from bench.models.weights import synthetic_model_problems
    from bench.plan import device_rates, estimate_cell_times, parse_filters, parse_shard, plan_suite
    from bench.plan.listing import cell_lines, to_csv, to_json
    from bench.plan.time_estimate import describe_rates
    from bench.plan.view import Footnotes, context_table, summary_fields, summary_table, totals_lines
    from bench.results import read_results
    from bench.runners.registry import detect_machine, quantization_catalog
    from bench.suite import load_suite

    suite = load_suite(Path(args.suite), quantization_catalog(), synthetic_model_problems)
    history = read_results(args.results) if args.results else None  # a bad path fails before any probing
    fingerprint = detect_machine()
    planned = plan_suite(
        suite,
        fingerprint,
        shard=parse_shard(args.shard) if args.shard else None,
        filters=parse_filters(args.only) if args.only else None,
        force=args.force,
    )
    rates = device_rates(suite, fingerprint)
    times = estimate_cell_times(planned, history, rates, fingerprint.fingerprint_id())
    model_basis = describe_rates(rates, sorted({p.cell.device_id for p in planned}))
    if args.format == "json":
        sys.stdout.write(
            to_json(planned, times, summary_fields(suite.name, fingerprint.host, planned, times, model_basis)) + "\n"
        )
        return 0
    if args.format == "csv":
        sys.stdout.write(to_csv(planned, times))
        return 0
    title = f"{suite.name}: {len(planned)} cells on {fingerprint.host}"
    if args.cells:
        # Plain lines, written as they are: rich would spend seconds on ten thousand of them.
        sys.stdout.write("\n".join([title, *cell_lines(planned, times, args.force)]) + "\n")
    else:
        notes = Footnotes()
        out.print(summary_table(planned, times, title, notes))
        _print_lines(notes.new_lines())
        contexts = context_table(planned, notes)
        if contexts is not None:
            out.print(contexts)
            _print_lines(notes.new_lines())
    _print_lines(totals_lines(planned, times, model_basis))
    return 0


def _print_lines(lines: list[str]) -> None:
    """Notes and totals, printed whole at any terminal width: users copy and grep them."""
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)


def register(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser("plan", help="show a suite's cells (and why any are skipped) without running them")
    plan.add_argument("suite")
    plan.add_argument("--force", action="store_true", help="do not skip cells the memory planner says will not fit")
    plan.add_argument(
        "--cells", action="store_true", help="list every cell (default: a summary per model, quantization and device)"
    )
    plan.add_argument(
        "--format",
        choices=("table", "json", "csv"),
        default="table",
        help="json or csv: one entry per cell, for scripts (default: table)",
    )
    plan.add_argument(
        "--results",
        action="append",
        metavar="DIR_OR_CSV",
        help="past results (CSV files or folders): measured rates for the time estimate; repeatable",
    )
    plan.add_argument("--shard", metavar="I/N", help="plan the I-th of N slices, as `bench run --shard` runs it")
    plan.add_argument(
        "--only",
        "--filter",
        action="append",
        metavar="FIELD=VALUE",
        help="only cells whose FIELD matches (e.g. quant=Q4_K_M, threads=1,2); repeatable",
    )
    plan.set_defaults(func=cmd_plan)

"""`bench quantize`: build every quantization a suite derives, once, into bench's cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli._console import out
from bench.errors import BenchError, ModelUnavailable
from bench.models import cache_dir
from bench.models.weights import synthetic_model_problems
from bench.plan import parse_filters, select_filters
from bench.runners.registry import backend, quantization_catalog
from bench.suite import Suite, expand


def derived_pairs(suite: Suite, filters: list[str]) -> list[tuple[str, str, str]]:
    """(model, quantization, backend) the suite builds from a source model, those matching `filters`."""
    derived = [c for c in expand(suite) if backend(c.backend).derives(suite.model(c.model_id), c.quantization)]
    every = list(dict.fromkeys((c.model_id, c.quantization) for c in derived))
    if not every:
        raise BenchError(
            f"suite {suite.name!r} derives no quantizations: each of its quantizations is `source` "
            "or a file under models[].files (a derived one is a GGUF type such as Q4_K_M with a source)"
        )
    chosen = select_filters(derived, parse_filters(filters)) if filters else derived
    pairs = list(dict.fromkeys((c.model_id, c.quantization, c.backend) for c in chosen))
    if not pairs:
        raise BenchError(
            f"--only {' '.join(filters)}: matches none of the derived quantizations; the suite derives "
            + ", ".join(f"{m} {q}" for m, q in every)
        )
    return pairs


def cmd_quantize(args: argparse.Namespace) -> int:
    from rich.table import Table

    from bench.suite import load_suite

    suite = load_suite(Path(args.suite), quantization_catalog(), synthetic_model_problems)
    table = Table(title=f"{suite.name}: derived quantizations (cache {cache_dir()})")
    for column, justify in (
        ("model", "left"),
        ("type", "left"),
        ("from", "left"),
        ("size MiB", "right"),
        ("bits/weight", "right"),
        ("status", "left"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    problems = 0
    for model_id, quantization, backend_name in derived_pairs(suite, list(args.only or [])):
        spec = backend(backend_name)
        assert spec.derive is not None  # derived_pairs takes the cells the backend derives
        try:
            derived = spec.derive(suite, suite.model(model_id), quantization)
        except ModelUnavailable as exc:
            table.add_row(model_id, quantization, "", "", "", f"skipped: {exc}", "")
            problems += 1
            continue
        except BenchError as exc:
            table.add_row(model_id, quantization, "", "", "", f"failed: {exc}", "")
            problems += 1
            continue
        bits = spec.model_fields(derived.path).get("bits_per_weight")
        status = (
            "built" if derived.build_seconds is not None else ("source file" if not derived.derived_from else "cached")
        )
        table.add_row(
            model_id,
            quantization,
            derived.derived_from,
            f"{derived.path.stat().st_size / 2**20:.1f}",
            f"{bits:.2f}" if isinstance(bits, float) else "",
            status,
            f"{derived.build_seconds or 0.0:.1f}",
        )
    out.print(table)
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quantize", help="build every quantization a suite derives from its source models (cached, built once)"
    )
    parser.add_argument("suite")
    parser.add_argument(
        "--only",
        "--filter",
        action="append",
        metavar="FIELD=VALUE",
        help="only these (e.g. quant=Q4_K_M, model=smollm2); repeatable",
    )
    parser.set_defaults(func=cmd_quantize)

#!/usr/bin/env python3
"""Fail (exit 1) unless a results file holds at least one measured (status ok) row on a device kind.

    scripts/require_measured.py --device-kind cuda RESULTS.csv|DIR

For CI: a GPU runner whose llama.cpp build lost CUDA records every GPU cell as `skipped` and would pass
green having measured nothing on the GPU; this check makes that night fail, naming the reasons.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.errors import BenchError  # noqa: E402
from bench.results import read_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device-kind", required=True, choices=("cpu", "cuda"))
    parser.add_argument("results", nargs="+")
    args = parser.parse_args(argv)
    try:
        frame = read_results(args.results)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    on_kind = frame[frame["device_kind"] == args.device_kind]
    measured = int((on_kind["status"] == "ok").sum())
    if measured:
        print(f"{measured} {args.device_kind} cell(s) measured")
        return 0
    reasons = sorted(set(on_kind["reason"].dropna().astype(str))) or ["no cell of that device kind in the suite"]
    print(f"error: no {args.device_kind} cell was measured; reasons: " + " | ".join(reasons), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

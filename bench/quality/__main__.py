"""`python -m bench.quality --model M.gguf`: perplexity as llama-perplexity measures it (compare_perplexity.sh)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import BenchError
from bench.quality.measure import perplexity_of
from bench.quality.text import BUILTIN_TEXT, load_eval_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality", description="Perplexity of a GGUF model, measured as llama-perplexity does."
    )
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--text", default=BUILTIN_TEXT, help="`builtin` or a UTF-8 text file")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="0 = all physical cores")
    args = parser.parse_args(argv)
    try:
        text = load_eval_text(args.text).text
        ppl, stderr, count = perplexity_of(args.model, text, args.context, args.chunks, args.threads)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"PPL = {ppl:.4f} +/- {stderr:.5f} ({count} tokens scored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The evaluation text perplexity and KLD are measured on: bench's built-in prose, or a UTF-8 file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError

BUILTIN_TEXT = "builtin"
BUILTIN_TEXT_PATH = Path(__file__).resolve().parents[1] / "data" / "eval_text.txt"


@dataclass(frozen=True)
class EvalText:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def load_eval_text(reference: str) -> EvalText:
    """`builtin` (English and Chinese prose written for bench) or a path to a UTF-8 text file."""
    path = BUILTIN_TEXT_PATH if reference == BUILTIN_TEXT else Path(reference).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(
            f"evaluation text not found: {path} (quality.text: expected `builtin` or a path to a UTF-8 text file)"
        ) from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"evaluation text {path} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise BenchError(f"cannot read evaluation text {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise BenchError(
            f"evaluation text {path} is empty: quality needs prose to score (at least "
            "quality.context tokens; use `builtin` or e.g. wikitext-2's wiki.test.raw)"
        )
    return EvalText(name=reference, text=text)

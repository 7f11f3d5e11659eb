"""What quality needs from a loaded model: tokens in and out, logits, greedy generation.

A backend that cannot give logits (an HTTP server, for instance) is still a backend for speed: it just does
not implement this protocol (its BackendSpec says `gives_logits=False`), and quality is skipped for it with
the reason `no_logits_reason` gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from bench.suite import Cell


class QualityModel(Protocol):
    """The quality side of an engine (bench.runners.base.SpeedEngine is the speed side)."""

    def n_vocab(self) -> int: ...

    def bos_token(self) -> int | None:
        """The token a sequence starts with, or None if the model adds none."""
        ...

    def tokenize(self, text: str, add_bos: bool = True) -> np.ndarray:
        """Token ids (int32) of text; add_bos: start with the model's BOS token if the model uses one."""
        ...

    def detokenize(self, tokens: np.ndarray) -> str:
        """Text of generated tokens (special tokens dropped)."""
        ...

    def prepare_logits(self, n_ctx: int, cell: Cell) -> None:
        """Get ready for logits()/generate_greedy() on up to n_ctx tokens."""
        ...

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Logits at every position of `tokens` as one fresh sequence: float32 [len(tokens), n_vocab]."""
        ...

    def generate_greedy(self, tokens: np.ndarray, max_new_tokens: int) -> np.ndarray:
        """Up to max_new_tokens tokens, each the most probable next one; stops at end of generation."""
        ...


# The protocol's methods, read from its body so the two cannot drift apart.
QUALITY_METHODS: tuple[str, ...] = tuple(
    name for name, value in vars(QualityModel).items() if not name.startswith("_") and callable(value)
)


def missing_quality_methods(obj: object) -> list[str]:
    """The protocol's methods that `obj` (an engine, or an engine class) lacks."""
    return [name for name in QUALITY_METHODS if not callable(getattr(obj, name, None))]


def supports_quality(obj: object) -> bool:
    """Whether `obj` (an engine, or an engine class) can be measured for quality."""
    return not missing_quality_methods(obj)


def no_logits_reason(backend: str) -> str:
    """What a row says in place of its quality columns when its backend gives no logits."""
    return f"backend {backend} gives no logits"


def quality_skip_reason(backend: str, obj: object) -> str:
    """'' when `obj` (an engine, or an engine class) supports quality; else why quality is not measured."""
    missing = missing_quality_methods(obj)
    if not missing:
        return ""
    what = no_logits_reason(backend) if "logits" in missing else f"backend {backend} lacks what quality needs"
    return f"{what} (its engine has no {', '.join(missing)})"

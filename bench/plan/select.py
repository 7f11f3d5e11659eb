"""Which cells a run takes: a shard (--shard i/n) and field filters (--only field=value).

Selection works on cells; a list of planned cells (anything holding its cell as `.cell`) is accepted too and
comes back as the same kind of items, so selection may run before or after planning.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any, TypeVar

from bench.errors import BenchError
from bench.suite import Cell, axes

Item = TypeVar("Item")


def _cell(item: Any) -> Cell:
    return item if isinstance(item, Cell) else item.cell


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' with 1 <= i <= n."""
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise BenchError(f"--shard {text!r}: expected i/n, e.g. 1/3") from None
    if not 1 <= index <= count:
        raise BenchError(f"--shard {text!r}: i must be between 1 and n")
    return index, count


def select_shard(items: Sequence[Item], shard: tuple[int, int]) -> list[Item]:
    """A deterministic slice by model load group, so each shard loads each model once.

    Groups are ordered by their identity (not by suite order or host), dealt round-robin.
    """
    index, count = shard
    keys = [_cell(item).load_key() for item in items]
    ordered = sorted(set(keys), key=repr)
    chosen = {key for position, key in enumerate(ordered) if position % count == index - 1}
    return [item for item, key in zip(items, keys, strict=True) if key in chosen]


def parse_filters(filters: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for text in filters:
        field, sep, pattern = text.partition("=")
        field = {"quant": "quantization"}.get(field.strip(), field.strip())
        if not sep or not pattern:
            raise BenchError(f"--only {text!r}: expected field=value, e.g. quant=Q4_K_M or threads=2")
        if field not in axes():
            raise BenchError(f"--only {text!r}: unknown field {field!r}; allowed: {', '.join(axes())}")
        parsed.append((field, pattern.strip()))
    return parsed


def select_filters(items: Sequence[Item], filters: list[tuple[str, str]]) -> list[Item]:
    """Keep cells matching every filter (values may use shell wildcards; comma = any of)."""

    def matches(cell: Cell) -> bool:
        for field, pattern in filters:
            value = str(cell.axis_value(field))
            if not any(fnmatch.fnmatchcase(value, option) for option in pattern.split(",")):
                return False
        return True

    return [item for item in items if matches(_cell(item))]

"""Backend blocks: a top-level suite block named after a backend, with that backend's typed settings.

A backend declares its block (a pydantic model, and which knob each field sets in its cells) in its spec; the
backend registry registers it here before any suite is read. The suite schema validates a block through the
registered model without naming any backend; the matrix puts each field's value into the knob it sets, so a
cell carries it to the worker, into its identity and into its row. Such a knob is said in the block only: the
loader refuses it under `knobs:` and in include/exclude.

A backend may also fill knobs of its cells from the suite's own fields (SuiteSettings: the server's SLO limits
from `slo` for a cell with a load profile): the matrix calls its `fill` per cell; those knobs are never written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class SuiteBlock:
    """A backend's block: its model (validates the block) and the knob each field sets (field -> knob name)."""

    model: type[BaseModel]
    knobs: Mapping[str, str]


# The error type a block's validator raises for an input that must not be echoed back (a password in a URL).
SECRET_INPUT = "secret_input"

BLOCKS: dict[str, SuiteBlock] = {}  # block name (= the backend's name) -> its declaration


def register_block(name: str, block: SuiteBlock) -> None:
    if name in BLOCKS:
        raise ValueError(f"suite block {name!r} is declared twice")
    unknown = [f for f in block.knobs if f not in block.model.model_fields]
    if unknown:
        raise ValueError(f"suite block {name!r} maps fields {unknown} its model does not have")
    BLOCKS[name] = block


def block_of_knob(knob: str) -> tuple[str, str] | None:
    """(block, field) when a block sets this knob, else None."""
    for name, block in BLOCKS.items():
        for field_name, knob_name in block.knobs.items():
            if knob_name == knob:
                return name, field_name
    return None


@dataclass(frozen=True)
class SuiteSettings:
    """Knobs a backend fills per cell from the suite's own fields: `source` the suite field they come from (named
    in errors), `knobs` the knobs it sets, `fill` (suite, the cell's fields) -> their values ({}: none)."""

    source: str
    knobs: tuple[str, ...]
    fill: Callable[[Any, Mapping[str, Any]], dict[str, Any]]


SETTINGS: dict[str, SuiteSettings] = {}  # backend name -> the knobs it fills from the suite


def register_settings(name: str, settings: SuiteSettings) -> None:
    if name in SETTINGS:
        raise ValueError(f"suite settings of {name!r} are declared twice")
    SETTINGS[name] = settings


def settings_source(knob: str) -> str | None:
    """The suite field a backend fills this knob from, None when none does."""
    return next((s.source for s in SETTINGS.values() if knob in s.knobs), None)
